"""Precision chosen by measurement: candidates, the choice rule, and the bundle that results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edge_vl.converters.precision import Candidate, choose

from edge_vl import Predictor, read_bundle
from edge_vl.cli import cli
from edge_vl.data import read_examples
from edge_vl.runtime.cpu import openvino_core
from tests.conftest import build_args


def _candidate(precision: str, accuracy: float, latency: float) -> Candidate:
    return Candidate(precision, Path(f"{precision}.xml"), accuracy, 1.0, latency, 1)


def test_choose_keeps_the_fastest_within_the_accuracy_tolerance():
    fp32 = _candidate("fp32", 0.90, 10.0)
    fast_ok, fast_bad = _candidate("int8", 0.895, 6.0), _candidate("int8", 0.85, 6.0)
    assert choose([fp32, fast_ok], 0.01)[0] is fast_ok
    chosen, reason = choose([fp32, fast_bad], 0.01)
    assert chosen is fp32 and "refused: int8" in reason
    assert choose([fp32, _candidate("int8", 0.95, 12.0)], 0.01)[0] is fp32  # slower: not chosen


def test_a_requested_precision_is_kept_if_accurate_enough_even_when_slower():
    fp32, slow_ok = _candidate("fp32", 0.90, 10.0), _candidate("int8", 0.90, 12.0)
    chosen, reason = choose([fp32, slow_ok], 0.01, required="int8")
    assert chosen is slow_ok and "NOT faster" in reason
    chosen, reason = choose([fp32, _candidate("int8", 0.80, 5.0)], 0.01, required="int8")
    assert chosen is fp32 and "refused: int8" in reason
    half = Candidate("fp16", Path("fp16.xml"), 0.9, 1.0, 12.0, 5_000_000)
    chosen, reason = choose([Candidate("fp32", Path("fp32.xml"), 0.9, 1.0, 10.0, 10_000_000), half], 0.01,
                            required="fp16")  # fmt: skip
    assert chosen is half and reason.startswith("fp16 weights:") and "5.0 MB instead of 10.0 MB" in reason
    assert "faster" not in reason  # FP16 only stores the weights smaller


def test_auto_precision_build_records_both_candidates_and_follows_its_numbers(
    tmp_path, tiny_checkpoint, shapes_data
):
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--precision", "auto")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).data
    precision = manifest["precision_choice"]
    by_name = {c["precision"]: c for c in precision["candidates"]}
    assert set(by_name) == {"fp32", "int8"}
    for c in by_name.values():
        assert 0 <= c["accuracy"] <= 1 and c["latency_ms"] > 0 and 0 <= c["agreement_with_fp32"] <= 1
    assert by_name["fp32"]["agreement_with_fp32"] == 1.0
    within = [c for c in by_name.values() if c["accuracy"] >= by_name["fp32"]["accuracy"] - 0.01]
    assert precision["chosen"] == min(within, key=lambda c: c["latency_ms"])["precision"]
    assert manifest["model"]["precision"] == precision["chosen"]
    assert set(manifest["files"]) >= {"model.xml", "model.bin"}
    assert not any(name.startswith("model-") for name in manifest["files"])  # losers removed
    ops = {op.get_type_name() for op in openvino_core().read_model(str(out / "model.xml")).get_ops()}
    assert ("FakeQuantize" in ops) == (precision["chosen"] == "int8")
    example = read_examples(shapes_data[1])[0]
    assert Predictor(out).predict(example.image, example.text).label in manifest["head"]["labels"]
    # the typed record, and `eval` on the device compares with the shipped model's own accuracy
    choice = read_bundle(out).manifest.precision_choice
    assert choice is not None and choice.chosen == precision["chosen"]
    assert choice.chosen_accuracy == by_name[precision["chosen"]]["accuracy"]
    evaluated = CliRunner().invoke(cli, ["eval", str(out), str(shapes_data[1]), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["build_accuracy"] == choice.chosen_accuracy
    assert report["accuracy"] == pytest.approx(choice.chosen_accuracy, abs=1e-4)


def test_int8_is_refused_when_it_loses_more_than_allowed(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--precision", "int8",
                      "--max-accuracy-drop", "0")  # fmt: skip
    result = CliRunner().invoke(cli, args)
    manifest_ok = result.exit_code == 0
    if manifest_ok:  # int8 happened to lose nothing on this tiny model: then it must say so
        c = {c["precision"]: c for c in read_bundle(out).data["precision_choice"]["candidates"]}
        assert c["int8"]["accuracy"] >= c["fp32"]["accuracy"]
    else:
        assert "int8 was refused" in result.output and not out.exists()


def test_text_buckets_give_the_full_length_answers(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--text-buckets", "4,8")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).data
    assert [b["length"] for b in manifest["model"]["text_buckets"]] == [4, 8]
    assert all(b["parity_max_abs"] <= 1e-4 for b in manifest["model"]["text_buckets"])

    bucketed, full = Predictor(out), Predictor(out, text_buckets=False)
    full_length = manifest["preprocessing"]["text"]["max_length"]
    assert [length for length, _ in bucketed.buckets] == [4, 8, full_length]
    rows = read_examples(shapes_data[1])
    images = [r.image for r in rows]
    texts = [r.text for r in rows[:-1]] + ["what " * 30 + "color ?"]  # one text needs the full length
    for i in range(len(rows)):  # batch 1: each row on its own bucket
        a = bucketed.logits(images[i : i + 1], texts[i : i + 1])
        b = full.logits(images[i : i + 1], texts[i : i + 1])
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert a.argmax() == b.argmax()
    np.testing.assert_allclose(bucketed.logits(images, texts), full.logits(images, texts), atol=1e-4)


def test_text_buckets_follow_the_chosen_precision(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--text-buckets", "4",
                      "--precision", "fp16")  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).data
    assert manifest["model"]["precision"] == "fp16"
    for xml in ("model.xml", manifest["model"]["text_buckets"][0]["xml"]):
        ops = openvino_core().read_model(str(out / xml)).get_ops()
        weights = {
            op.get_output_element_type(0).get_type_name() for op in ops if op.get_type_name() == "Constant"
        }
        assert "f16" in weights, xml
    assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    predictor = Predictor(out)
    assert predictor.buckets[0][0] == 4
    example = read_examples(shapes_data[1])[0]
    assert predictor.predict(example.image, "red ?").label in manifest["head"]["labels"]


def test_fp16_weights_that_change_the_answers_ship_fp32_with_a_warning(
    tmp_path, tiny_checkpoint, shapes_data, monkeypatch
):
    """The default (fp16) must never fail a finished fine-tune: a lossy FP16 model falls back to FP32."""
    from edge_vl.converters import precision

    honest = precision.eval_logits

    def fp16_answers_wrong(xml, batches):
        logits = honest(xml, batches)  # FP16: every row's scores moved on by one label
        return np.roll(logits, 1, axis=-1) if "fp16" in Path(xml).name else logits

    monkeypatch.setattr(precision, "eval_logits", fp16_answers_wrong)
    out = tmp_path / "b"
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1"))
    assert result.exit_code == 0, result.output
    assert "WARNING: fp32: fp16 was not within 1.0% of fp32's accuracy" in result.output
    manifest = read_bundle(out).data
    assert manifest["model"]["precision"] == "fp32" and manifest["precision_choice"]["chosen"] == "fp32"
    assert not list(out.glob("model-*"))  # the refused candidate is not left in the bundle


def test_int8_quantization_makes_no_second_openvino_core(tmp_path, tiny_bundle, shapes_data, monkeypatch):
    """NNCF would make a Core per statistics pass; a second Core in one process can crash OpenVINO."""
    import openvino as ov
    from edge_vl.converters.precision import quantize_int8

    example = read_examples(shapes_data[1])[0]
    with Predictor(tiny_bundle) as predictor:  # the process's Core exists from here on
        feed = predictor.prepare([example.image], [example.text])
        xml = tiny_bundle / predictor.bundle.manifest.model.xml
    made, real = [], ov.Core
    monkeypatch.setattr(ov, "Core", lambda *args: made.append(args) or real(*args))
    int8 = quantize_int8(xml, [feed] * 4, tmp_path, vnni=True, size=4)
    assert made == [] and ov.Core is not real  # restored to what it was (here: the counter)
    assert int8.with_suffix(".bin").stat().st_size > 0


def test_int8_bundles_get_no_text_buckets(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--text-buckets", "4",
                      "--precision", "int8", "--max-accuracy-drop", "1")  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "not exported with int8" in result.output
    manifest = read_bundle(out).data
    assert manifest["model"]["precision"] == "int8" and not manifest["model"].get("text_buckets")


def test_interleaved_ir_latency_times_every_model_every_round(tiny_bundle, shapes_data):
    from edge_vl.timing import interleaved_ir_latency

    example = read_examples(shapes_data[1])[0]
    with Predictor(tiny_bundle) as predictor:
        feed = predictor.prepare([example.image], [example.text])
        xml = tiny_bundle / predictor.bundle.manifest.model.xml
    times = interleaved_ir_latency({"a": xml, "b": str(xml)}, {"a": feed, "b": feed}, runs=3, threads=1)
    assert set(times) == {"a", "b"} and all(len(t) == 3 and min(t) > 0 for t in times.values())


def test_target_profile_drives_the_precision_choice(tmp_path, tiny_bundle, tiny_checkpoint, shapes_data):
    profile = tmp_path / "target.json"
    result = CliRunner().invoke(
        cli, ["bench", str(tiny_bundle), "--duration", "0.2", "--target-profile", str(profile)]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(profile.read_text())
    assert saved["runtime_profile"] == "default" and saved["machine"]["flags"]
    probe = saved["precision_probe"]
    assert probe["fp32_ms"] > 0 and probe["int8_ms"] > 0
    assert probe["int8_speedup"] == pytest.approx(probe["fp32_ms"] / probe["int8_ms"])
    assert probe["int8_layers"] == 2 * probe["graph"]["blocks"]  # every matrix product ran in 8 bits

    # a legacy box without VNNI where INT8 runs 50x slower than FP32 on the reference graph
    slow_int8 = {**saved, "runtime_profile": "legacy",
                 "machine": {**saved["machine"], "cpu": "old box", "flags": {"SSE42": True, "AVX2": False}},
                 "precision_probe": {**probe, "int8_ms": probe["fp32_ms"] * 50}}  # fmt: skip
    target = tmp_path / "old-box.json"
    target.write_text(json.dumps(slow_int8))
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--precision", "auto",
                      "--target-profile", str(target))  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).data
    precision = manifest["precision_choice"]
    assert precision["vnni"] is False and precision["target"]["cpu"] == "old box"
    scale = precision["target"]["latency_scale"]
    assert scale["int8"] > 10 * scale["fp32"]
    by_name = {c["precision"]: c for c in precision["candidates"]}
    assert by_name["int8"]["latency_ms"] > by_name["fp32"]["latency_ms"]  # predicted for the target
    assert precision["chosen"] == "fp32" and "legacy" in manifest["runtime"]["profiles"]

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"machine": {}}))
    args = build_args(tiny_checkpoint, shapes_data, tmp_path / "c", "--target-profile", str(broken))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "broken.json" in result.output
    assert "missing machine.flags, precision_probe.fp32_ms" in result.output


def test_a_target_runtime_that_cannot_read_the_ir_fails_the_build(tmp_path):
    from types import SimpleNamespace

    from edge_vl.errors import ExportError
    from edge_vl.pipeline.package import runtime_for

    (tmp_path / "model.xml").write_text(
        '<net><layers><layer id="0" type="X" version="opset17"/></layers></net>'
    )
    assert runtime_for(SimpleNamespace(target_profile=None), tmp_path).profiles == ("default",)
    with pytest.raises(ExportError, match=r"target runs the legacy runtime.*opset17"):
        runtime_for(SimpleNamespace(target_profile={"runtime_profile": "legacy"}), tmp_path)
