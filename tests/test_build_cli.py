"""`edge-vl build` end to end on a tiny ViLT, and the bundle it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_vl import Predictor, read_bundle
from edge_vl.bundle import manifest_digest
from edge_vl.cli import cli
from edge_vl.data import read_examples
from edge_vl.runtime.cpu import openvino_core
from tests.conftest import SKIP, build_args


def test_manifest_lists_exactly_the_skipped_layers(tiny_bundle):
    manifest = read_bundle(tiny_bundle).data
    arch = manifest["architecture"]
    assert arch["family"] == "vilt"
    assert arch["skipped"] == SKIP
    assert arch["kept"] == [0, 2]
    assert arch["layers"] == [f"vilt.encoder.layer.{i}" for i in range(4)]
    assert manifest["model"]["precision"] == "fp16"  # the default, checked against fp32 on the eval rows
    assert [c["precision"] for c in manifest["precision_choice"]["candidates"]] == ["fp32", "fp16"]
    bundle_files = {"model.xml", "model.bin", "tokenizer.json", "report.json", "report.html"}
    assert set(manifest["files"]) == bundle_files
    assert 0.0 <= manifest["metrics"]["eval_accuracy"] <= 1.0
    assert manifest["metrics"]["parity_max_abs"] <= 1e-4


def test_ir_holds_only_the_kept_transformer_layers(tiny_bundle):
    model = openvino_core().read_model(str(tiny_bundle / "model.xml"))
    # one attention softmax per transformer layer that still runs
    softmaxes = [op for op in model.get_ops() if op.get_type_name().startswith("Softmax")]
    assert len(softmaxes) == 4 - len(SKIP)
    names = " ".join(op.get_friendly_name() for op in model.get_ops())
    for i in SKIP:
        assert f"layer.{i}.layer." not in names  # the skipped block's own weights are not in the graph
    for i in (0, 2):
        assert f"layer.{i}.layer." in names


def test_predictor_matches_torch_on_eight_inputs(tmp_path, tiny_checkpoint, shapes_data):
    """OpenVINO (with numpy/Pillow preprocessing from raw files) vs the trained torch model."""
    import torch

    from edge_vl.config import BuildConfig, TrainConfig
    from edge_vl.data import read_examples
    from edge_vl.pipeline import build
    from edge_vl.runtime.tokenize import TextEncoder
    from edge_vl.training.encoded import encode_examples

    result = build(
        BuildConfig(
            model_dir=tiny_checkpoint,
            train_data=shapes_data[0],
            eval_data=shapes_data[1],
            out=tmp_path / "b",
            skip_layers=SKIP,
            progress=False,
            train=TrainConfig(max_steps=6, batch_size=8),
            precision="fp32",  # torch's own weights: the device must reproduce torch's logits
        ),
        echo=lambda _: None,
    )
    examples = read_examples(shapes_data[1])[:8]
    predictor = Predictor(result.bundle)
    got = predictor.logits([ex.image for ex in examples], [ex.text for ex in examples])

    m = result.manifest
    typed = predictor.bundle.manifest
    encoder = TextEncoder.from_spec(result.bundle, typed.preprocessing.text)
    data = encode_examples(examples, typed.preprocessing.image, encoder, list(m.head.labels))
    with torch.no_grad():
        expected = result.family.forward(result.model.eval(), data.batch(slice(None))).numpy()
    assert result.family.skipped(result.model) == SKIP
    assert got.shape == (8, len(list(m.head.labels)))
    assert np.max(np.abs(got - expected)) <= 1e-4


def test_predict_cli_text_and_json(tiny_bundle, shapes_data):
    row = json.loads(shapes_data[1].read_text().splitlines()[0])
    image = str(shapes_data[1].parent / row["image"])
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", str(tiny_bundle), image, row["text"], "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    labels = read_bundle(tiny_bundle).labels
    assert payload["label"] in labels
    assert set(payload["scores"]) == set(labels)
    assert payload["score"] == max(payload["scores"].values())
    text = runner.invoke(cli, ["predict", str(tiny_bundle), image, row["text"]])
    assert text.exit_code == 0 and text.output.split("\t")[0] == payload["label"]


def test_info_and_bench_cli(tiny_bundle):
    runner = CliRunner()
    info = runner.invoke(cli, ["info", str(tiny_bundle)])
    assert info.exit_code == 0, info.output
    assert "skipped layers  [1, 3] of 4" in info.output and "AVX2" in info.output
    assert "runtimes        default, legacy" in info.output
    assert "host runtime    default (OpenVINO 20" in info.output
    bench = runner.invoke(cli, ["bench", str(tiny_bundle), "--duration", "0.5", "--batch", "2", "--json"])
    assert bench.exit_code == 0, bench.output
    report = json.loads(bench.output)
    assert report["batch"] == 2 and report["latency_ms"]["iterations"] >= 20
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p90"] <= report["latency_ms"]["p99"]
    assert report["throughput"]["requests"] >= 1 and report["throughput"]["samples_per_s"] > 0
    assert report["inference_precision"] == "f32" and report["peak_rss_mb"] > 0
    assert report["machine"]["flags"]["AVX2"] in (True, False) and report["machine"]["openvino"]
    text = runner.invoke(cli, ["bench", str(tiny_bundle), "--duration", "0.5"])
    assert text.exit_code == 0, text.output
    for label in (
        "cold start",
        "latency (ms)",
        "p99",
        "throughput",
        "peak memory",
        "openvino",
        "computes in",
    ):
        assert label in text.output


def _bad_manifest(tmp_path: Path, shapes_data, bad_row: dict) -> Path:
    good = shapes_data[0].read_text().splitlines()[:3]
    lines = [json.loads(line) for line in good]
    for row in lines:
        row["image"] = str(shapes_data[0].parent / row["image"])
    lines.insert(1, bad_row)
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        ({"image": "does-not-exist.png", "text": "what color?", "label": "red"}, "not found"),
        ({"image": "not-an-image.png", "text": "what color?", "label": "red"}, "not an image in an accepted"),
        ({"image": "IMG", "text": "what color?", "label": 3}, "field 'label' must be a string"),
    ],
    ids=["missing-image", "unreadable-image", "non-string-label"],
)
def test_bad_data_row_exits_2_and_names_file_and_line(
    tmp_path, tiny_checkpoint, shapes_data, bad_row, expected
):
    (tmp_path / "not-an-image.png").write_text("this is text, not a PNG")
    if bad_row["image"] == "IMG":
        bad_row = {**bad_row, "image": str(next((shapes_data[0].parent / "images").iterdir()))}
    manifest = _bad_manifest(tmp_path, shapes_data, bad_row)
    out = tmp_path / "out" / "bundle"
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, (manifest, shapes_data[1]), out))
    assert result.exit_code == 2, result.output
    assert f"{manifest}:2:" in result.output
    assert expected in result.output
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no staging leftovers


def test_failed_build_leaves_nothing_behind(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1,7"))
    assert result.exit_code == 2
    assert "out of range" in result.output and "0..3" in result.output
    assert not out.exists() and not list(tmp_path.glob(".bundle.staging-*"))


def test_existing_output_is_not_overwritten_without_flag(tmp_path, tiny_bundle, tiny_checkpoint, shapes_data):
    before = (tiny_bundle / "manifest.json").read_bytes()
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, tiny_bundle))
    assert result.exit_code == 2 and "already holds a bundle" in result.output
    assert (tiny_bundle / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("command", [None, "build", "predict", "info", "bench"])
def test_help_describes_options(command):
    args = ([command] if command else []) + ["--help"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if command == "build":
        for option in ("--model", "--data", "--eval-data", "--skip-layers", "--out", "--epochs", "--demo"):
            assert option in result.output
    elif command == "predict":
        assert "--json" in result.output and "BUNDLE [IMAGE] [TEXT]" in result.output
    elif command:
        assert "BUNDLE" in result.output


def test_overwrite_replaces_a_bundle_atomically(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    first = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1"))
    assert first.exit_code == 0, first.output
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "2", "--overwrite", "--lr", "5e-4")
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert read_bundle(out).data["architecture"]["skipped"] == [2]
    assert read_bundle(out).data["training"]["lr"] == 5e-4  # an explicit --lr beats the family's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no staging or backup directories left


def test_named_models_resolve_to_shipped_checkpoints(tmp_path, monkeypatch):
    from edge_vl import ModelError, config

    monkeypatch.setitem(config.NAMED_MODELS, "edge-vl-mini", tmp_path)
    with pytest.raises(ModelError, match=r"not in this install .* pip install -e"):
        config.resolve_model_dir("edge-vl-mini")
    (tmp_path / "config.json").write_text("{}")
    assert config.resolve_model_dir("edge-vl-mini") == tmp_path
    assert config.resolve_model_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_build_without_model_uses_the_shipped_edge_vl_mini(tmp_path, shapes_data):
    out = tmp_path / "b"
    args = build_args(Path("unused"), shapes_data, out, "--skip-layers", "2,9", "--max-steps", "2")
    args = args[:1] + args[3:]  # no --model
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).data
    assert manifest["architecture"]["family"] == "meter"
    assert manifest["architecture"]["model_type"] == "edge_vl_mini"
    assert manifest["architecture"]["source"] == "edge-vl-mini"  # resolves on any machine
    assert len(manifest["architecture"]["layers"]) == 12 and manifest["architecture"]["skipped"] == [2, 9]
    assert manifest["metrics"]["parity_max_abs"] <= 1e-4
    example = read_examples(shapes_data[1])[0]
    assert Predictor(out).predict(example.image, example.text).label in manifest["head"]["labels"]


def test_bench_compares_the_bundle_with_torch_eager_and_the_full_model(tiny_bundle):
    result = CliRunner().invoke(
        cli, ["bench", str(tiny_bundle), "--duration", "0.2", "--compare", "torch", "--runs", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    compare = json.loads(result.output)["compare"]
    assert compare["skipped"] == [1, 3] and compare["runs"] == 5
    latency = compare["latency_ms"]
    assert set(latency) == {"openvino_retained", "openvino_full", "torch_retained", "torch_full"}
    for figures in latency.values():
        assert 0 < figures["p10"] <= figures["median"] <= figures["p90"]
    ours = latency["openvino_retained"]["median"]
    for name, ratio in compare["speedup_of_bundle"].items():
        assert ratio == pytest.approx(latency[name]["median"] / ours)
    args = ["bench", str(tiny_bundle), "--duration", "0.2", "--compare", "torch", "--runs", "3"]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert "torch_full" in text.output and "the bundle" in text.output


def test_bench_compare_names_the_missing_source_checkpoint(tiny_bundle, tmp_path):
    moved = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["architecture"]["source"] = str(tmp_path / "gone")
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (moved / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["bench", str(moved), "--duration", "0.2", "--compare", "torch"])
    assert result.exit_code != 0
    assert "architecture.source" in result.output and "gone" in result.output
    source = read_bundle(tiny_bundle).data["architecture"]["source"]
    args = ["bench", str(moved), "--duration", "0.2", "--compare", "torch", "--runs", "3", "--model", source]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output  # --model points at the checkpoint instead
