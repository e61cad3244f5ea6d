"""A fixed question folded into the graph: the bundle carries no text tower, answers as the model
with its tower does, and refuses texts it was not built for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_vl import InputError, Predictor
from edge_vl.bundle import read_bundle
from edge_vl.cli import cli
from edge_vl.data import read_examples
from tests.conftest import VOCAB, build_args

ROOT = Path(__file__).resolve().parents[1]
SHAPE_QUESTION = "which shape does the image contain?"
COLOR_QUESTION = "what color is the shape?"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _subset(shapes_data, out: Path, train_texts: set[str], eval_texts: set[str]) -> tuple[Path, Path]:
    """The shapes data with only the rows asking ``train_texts`` / ``eval_texts`` (images shared)."""
    out.mkdir()
    paths = []
    for source, texts in zip(shapes_data, (train_texts, eval_texts), strict=True):
        rows = [dict(r, image=str(source.parent / r["image"])) for r in _rows(source) if r["text"] in texts]
        paths.append(out / source.name)
        paths[-1].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def tiny_meter(tmp_path_factory) -> Path:
    """A random edge-vl-mini-shaped checkpoint: text layers 0-1, fusion layers 2-3."""
    from edge_vl.training.architectures import family_for
    from edge_vl.training.architectures.quiet import quiet_transformers

    out = tmp_path_factory.mktemp("tiny-meter")
    with quiet_transformers():
        family = family_for("edge_vl_mini")
        family.random_checkpoint(out, vocab=VOCAB, labels=["x", "y"], preset="tiny", seed=0)
    return out


@pytest.fixture(scope="module")
def one_question(shapes_data, tmp_path_factory) -> tuple[Path, Path]:
    return _subset(shapes_data, tmp_path_factory.mktemp("fixed") / "d", {SHAPE_QUESTION}, {SHAPE_QUESTION})


@pytest.fixture(scope="module")
def folded_and_not(tiny_meter, one_question, tmp_path_factory) -> tuple[Path, Path, str]:
    """The same build (fusion layer 3 skipped) with the text folded and with its tower kept."""
    root = tmp_path_factory.mktemp("fold-builds")
    outputs = []
    for name, extra in (("folded", ()), ("tower", ("--no-fold-text",))):
        args = build_args(tiny_meter, one_question, root / name, "--skip-layers", "3", *extra)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    return root / "folded", root / "tower", outputs[0]


def test_a_fixed_question_is_folded_and_the_bundle_says_so(folded_and_not):
    folded, tower, output = folded_and_not
    assert f"every row asks '{SHAPE_QUESTION}'" in output and "--no-fold-text" in output
    model = read_bundle(folded).manifest.model
    assert [s.name for s in model.inputs] == ["text_index", "pixel_values"]
    assert model.folded_texts is not None and model.folded_texts.texts == (SHAPE_QUESTION,)
    kept = read_bundle(tower).manifest.model
    assert kept.folded_texts is None and "input_ids" in [s.name for s in kept.inputs]
    info = CliRunner().invoke(cli, ["info", str(folded)])
    assert info.exit_code == 0 and f"only '{SHAPE_QUESTION}' (folded into the graph)" in info.output


def test_the_folded_bundle_answers_as_the_model_with_its_text_tower(folded_and_not, one_question):
    folded, tower, _ = folded_and_not
    rows = read_examples(one_question[1])
    images, texts = [r.image for r in rows], [r.text for r in rows]
    with Predictor(folded) as a, Predictor(tower) as b:
        got, expected = a.logits(images, texts), b.logits(images, texts)
    assert got.shape == expected.shape == (len(rows), 2)
    assert np.max(np.abs(got - expected)) <= 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_the_monitor_of_a_folded_bundle_records_the_text_signals(folded_and_not, one_question, tmp_path):
    """The lookup replaces the tokens in what the graph takes, not in what the monitor sees."""
    from edge_vl.runtime.monitor import MonitorStore

    folded, tower, _ = folded_and_not
    row = read_examples(one_question[1])[0]
    recorded = []
    for bundle in (folded, tower):
        with Predictor(bundle, monitor=tmp_path / f"{bundle.name}.db") as predictor:
            predictor.predict(row.image, row.text)
        recorded.append(MonitorStore(tmp_path / f"{bundle.name}.db").recent(1)[0])
    assert recorded[0]["text_tokens"] == recorded[1]["text_tokens"] > 0
    assert recorded[0]["unknown_rate"] == recorded[1]["unknown_rate"] is not None


def test_the_folded_bundle_costs_less_and_holds_no_text_tower(folded_and_not):
    folded, tower, _ = folded_and_not
    a, b = read_bundle(folded).manifest, read_bundle(tower).manifest
    assert a.cost.full_model == b.cost.full_model  # the same baseline: the model with its tower
    assert a.cost.retained_model < b.cost.retained_model
    text_layers = a.cost.per_layer.layer[:2]
    assert text_layers == (0, 0) and all(b.cost.per_layer.layer[:2])
    # the text tower's weights (embedding table, two layers) are not in the graph
    assert (folded / a.model.bin).stat().st_size < (tower / b.model.bin).stat().st_size


def test_bench_compares_a_folded_bundle_with_the_full_model_on_its_question(folded_and_not):
    folded, _, _ = folded_and_not
    args = ["bench", str(folded), "--duration", "0.2", "--compare", "torch", "--runs", "3", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    compare = json.loads(result.output)["compare"]
    assert set(compare["latency_ms"]) == {
        "openvino_retained",
        "openvino_full",
        "torch_retained",
        "torch_full",
    }
    assert "text tower the bundle folded away" in compare["note"]


def test_a_question_the_bundle_was_not_built_for_is_refused(folded_and_not, one_question):
    folded, _, _ = folded_and_not
    image = read_examples(one_question[1])[0].image
    with Predictor(folded) as predictor:
        with pytest.raises(InputError, match=r"not a question this bundle answers.*which shape"):
            predictor.predict(image, COLOR_QUESTION)
        assert predictor.predict(image, SHAPE_QUESTION).label in ("circle", "rectangle")
    result = CliRunner().invoke(cli, ["predict", str(folded), str(image), COLOR_QUESTION])
    assert result.exit_code == 2 and "--no-fold-text" in result.output


def test_a_few_questions_fold_and_a_mixed_batch_is_answered_row_by_row(tiny_meter, shapes_data, tmp_path):
    out = tmp_path / "two"
    result = CliRunner().invoke(cli, build_args(tiny_meter, shapes_data, out, "--skip-layers", ""))
    assert result.exit_code == 0, result.output
    folded = read_bundle(out).manifest.model.folded_texts
    assert folded is not None and set(folded.texts) == {SHAPE_QUESTION, COLOR_QUESTION}
    rows = read_examples(shapes_data[1])
    with Predictor(out) as predictor:
        batch = predictor.logits([r.image for r in rows], [r.text for r in rows])
        one_by_one = np.concatenate([predictor.logits([r.image], [r.text]) for r in rows])
    assert np.allclose(batch, one_by_one, atol=1e-5)


def test_no_fold_when_the_eval_data_asks_another_question(tiny_meter, one_question, tmp_path):
    rows = _rows(one_question[1])
    rows[0]["text"] = "what shape is it?"  # same labels, a question the training rows never ask
    evals = tmp_path / "eval.jsonl"
    evals.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = (one_question[0], evals)
    result = CliRunner().invoke(cli, build_args(tiny_meter, data, tmp_path / "b", "--skip-layers", ""))
    assert result.exit_code == 0, result.output
    assert "eval data asks other texts: the text tower stays" in result.output
    assert read_bundle(tmp_path / "b").manifest.model.folded_texts is None


def test_single_stream_models_keep_their_text_inputs(tiny_checkpoint, one_question, tmp_path):
    args = build_args(tiny_checkpoint, one_question, tmp_path / "b", "--skip-layers", "")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "but edge-vl folds no text of vilt models" in result.output
    assert read_bundle(tmp_path / "b").manifest.model.folded_texts is None


def test_a_manifest_with_text_index_but_no_folded_texts_is_refused(folded_and_not, tmp_path):
    from edge_vl.errors import BundleError

    folded, _, _ = folded_and_not
    data = json.loads((folded / "manifest.json").read_text())
    del data["model"]["folded_texts"]
    with pytest.raises((BundleError, ValueError), match="folded_texts"):
        from edge_vl.manifest import Manifest
        from edge_vl.schema import parse

        parse(Manifest, data)


def test_text_index_lookup_names_the_known_texts():
    from edge_vl.folding import text_index, texts_to_fold

    ids = np.array([[1, 5, 2, 0], [1, 6, 7, 2], [1, 5, 2, 0]])
    mask = (ids > 0).astype(np.int64)
    folded = texts_to_fold(["a?", "b c?", "a ?"], ids, mask)
    assert folded is not None and folded.texts == ("a?", "b c?")  # the same ids: one text
    assert text_index(folded, ids[::-1], mask[::-1]).tolist() == [0, 1, 0]
    with pytest.raises(InputError, match=r"text 1 of the batch .*'a\?'; 'b c\?'"):
        text_index(folded, np.array([[1, 5, 2, 0], [1, 9, 2, 0]]), mask[:2])
    six = np.arange(1, 7)[:, None].repeat(2, axis=1)
    assert texts_to_fold([str(i) for i in range(6)], six, np.ones_like(six)) is None  # too many to fold


def test_input_cost_benchmark_times_sizes_and_the_folded_question_and_renders_part_i(
    folded_and_not, one_question, tmp_path
):
    """``examples/benchmarks/input_cost.py`` (part i of RESULTS.md) on a small bundle, end to end."""
    from examples.benchmarks.results import input_cost_section

    _, tower, _ = folded_and_not
    out = tmp_path / "input_cost.json"
    command = [
        sys.executable,
        "-m",
        "examples.benchmarks.input_cost",
        str(tower),
        "--eval",
        str(one_question[1]),
    ]
    command += ["--out", str(out), "--parts", "demo", "--runs", "2", "--rows", "6", "--sizes", "64"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    measured = json.loads(out.read_text())
    demo = measured["demo"]
    assert demo["question"] == SHAPE_QUESTION and demo["fold_parity"]["same_answers"] == 6
    assert demo["fold_parity"]["max_abs"] <= 1e-4 * max(1.0, demo["fold_parity"]["logit_scale"])
    sizes = {(r["image_size"], r["set"]) for r in demo["size_rows"]}
    assert sizes == {(64, k) for k in ("none", "bundle", "all")}
    macs = {r["variant"]: r["macs"] for r in demo["fold_rows"]}
    assert macs["64px/bundle+folded"] < macs["64px/bundle"] < macs["64px/none"]  # the tiny model's size
    text = "\n".join(input_cost_section(measured))
    assert "A folded question" in text and "| 64 px | bundle |" in text


def test_fixed_question_benchmark_compares_a_folded_bundle_with_its_tower_and_renders_part_f(
    folded_and_not, one_question
):
    """``examples/benchmarks/fixed_question.py`` (part f of RESULTS.md): its comparison on two small
    bundles (the builds themselves are the CLI's, tested above)."""
    from examples.benchmarks.fixed_question import compare
    from examples.benchmarks.results import fixed_question_section

    folded, tower, _ = folded_and_not
    measured = compare(folded, tower, one_question[1], runs=2)
    assert measured["same_answers"] == measured["rows"] == len(read_examples(one_question[1]))
    assert measured["max_abs_logit_difference"] <= 1e-4 * max(1.0, measured["max_abs_logit"])
    variants = measured["variants"]
    assert variants["folded"]["macs"] < variants["text tower"]["macs"]
    assert variants["folded"]["inputs"] == ["text_index", "pixel_values"]
    with pytest.raises(SystemExit, match="must be folded"):
        compare(tower, folded, one_question[1], runs=2)
    fp16 = {"builds": {"folded": {"skipped": [1]}}, **measured}
    results = {"command": "c", "measured": "m", "task": "t", "precisions": {"fp16": fp16}}
    text = "\n".join(fixed_question_section(results))
    assert "| fp16 | folded | text_index, pixel_values |" in text and "answers the same" in text
