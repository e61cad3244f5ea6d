"""After deployment: eval on the device, batch prediction, calibrated scores and abstention, drift
monitoring with triggers, and Prometheus metrics."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_vl import Predictor, read_bundle
from edge_vl.cli import cli
from edge_vl.runtime.calibration import calibrate, ece, fit_temperature, scores_of, threshold_for
from edge_vl.runtime.monitor import MonitorStore, Thresholds, check_drift
from edge_vl.runtime.signals import Signals, reference_profile
from tests.conftest import build_args, make_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]


# -- calibration -----------------------------------------------------------------------------------
def _overconfident(n: int, seed: int, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``scale`` times sharper than the probabilities the labels were drawn from."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, 5)) * 1.5
    probs = scores_of(true_logits, "softmax")
    labels = np.array([rng.choice(5, p=p) for p in probs])
    return true_logits * scale, labels


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_ece():
    logits, labels = _overconfident(4000, seed=0)
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)
    fit = calibrate(logits, labels, target_precision=0.9)
    assert fit.ece_after <= fit.ece_before / 2, fit  # cross-fitted
    assert fit.precision is not None and fit.precision >= 0.85 and 0 < fit.coverage < 1
    conf = scores_of(logits, "softmax", fit.temperature).max(-1)
    answered = conf >= fit.threshold
    assert (scores_of(logits, "softmax").argmax(-1) == labels)[answered].mean() >= 0.9  # on the fit rows


def test_threshold_for_is_the_lowest_that_reaches_the_precision():
    confidence = np.array([0.99, 0.95, 0.9, 0.9, 0.6, 0.5])
    correct = np.array([1, 1, 1, 0, 1, 0])
    assert threshold_for(confidence, correct, 1.0) == 0.95  # 0.9 holds a wrong row
    assert threshold_for(confidence, correct, 0.75) == 0.6  # 4 of 5 answered rows right
    assert threshold_for(np.array([0.5]), np.array([0]), 0.9) is None
    assert ece(np.array([0.9, 0.9]), np.array([1, 0])) == pytest.approx(0.4)


# -- a bundle with a calibration and a reference profile --------------------------------------------
@pytest.fixture(scope="module")
def reliable(tmp_path_factory, tiny_checkpoint):
    """The tiny ViLT on 128 shape rows (32 eval rows: enough to calibrate)."""
    root = tmp_path_factory.mktemp("reliable")
    data = make_shapes_dataset(root / "data", n_images=64, seed=1)
    out = root / "bundle"
    args = build_args(
        tiny_checkpoint, data, out, "--skip-layers", "1", "--max-steps", "30", "--target-precision", "0.5"
    )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out, data


def test_the_build_records_calibration_reference_and_eval_fingerprint(reliable):
    bundle, _ = reliable
    manifest = read_bundle(bundle).manifest
    assert manifest.calibration is not None and manifest.calibration.rows == 32
    assert manifest.calibration.temperature > 0
    assert manifest.reference is not None and manifest.reference.rows == 32
    assert {"confidence", "brightness", "contrast", "width", "text_tokens"} <= set(manifest.reference.signals)
    assert manifest.data is not None and len(manifest.data.eval_fingerprint or "") == 64
    assert manifest.metrics.confusion is not None and sum(map(sum, manifest.metrics.confusion)) == 32
    report = (bundle / "report.html").read_text()
    assert "calibration" in report and "confusion matrix" in report.lower() and "Next steps" in report
    # the abstention's precision with two decimals: 98.99 % must not read as a 99 % target met
    assert manifest.abstention is not None and re.search(r"\d\.\d\d% of them right", report), report


def test_eval_reproduces_the_build_accuracy_and_gates(reliable, tmp_path):
    bundle, data = reliable
    runner = CliRunner()
    result = runner.invoke(
        cli, ["eval", str(bundle), str(data[1]), "--json", "--out", str(tmp_path / "p.jsonl")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    manifest = read_bundle(bundle).manifest
    assert round(report["accuracy"], 4) == round(manifest.metrics.eval_accuracy, 4)
    assert report["same_data_as_build"] is True and report["rows"] == 32
    assert np.array(report["confusion"]).sum() == 32 and len(report["classes"]) == len(manifest.labels)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 32
    text = runner.invoke(cli, ["eval", str(bundle), str(data[1])]).output
    assert "confusion matrix" in text and "the build's eval data" in text
    gated = runner.invoke(cli, ["eval", str(bundle), str(data[1]), "--min-accuracy", "1.0"])
    assert gated.exit_code == 3 and "below --min-accuracy" in gated.output
    again = runner.invoke(cli, ["eval", str(bundle), str(data[1]), "--out", str(tmp_path / "p.jsonl")])
    assert again.exit_code == 2 and "never overwrites" in again.output
    other = tmp_path / "other.jsonl"
    rows = [json.loads(line) for line in data[1].read_text().splitlines()][:10]
    other.write_text(
        "".join(json.dumps({**r, "image": str(data[1].parent / r["image"])}) + "\n" for r in rows)
    )
    elsewhere = runner.invoke(cli, ["eval", str(bundle), str(other), "--json"])
    assert json.loads(elsewhere.stdout)["same_data_as_build"] is False
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "nope.png", "text": "q", "label": "red"}) + "\n")
    failed = runner.invoke(cli, ["eval", str(bundle), str(bad)])
    assert failed.exit_code == 2 and f"{bad}:1: field 'image'" in failed.output
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(
        json.dumps({**rows[0], "image": str(data[1].parent / rows[0]["image"]), "label": "mauve"})
    )
    assert (
        "labels ['mauve'] are not among the bundle's answers"
        in runner.invoke(cli, ["eval", str(bundle), str(unknown)]).output
    )


def test_batch_prediction_keeps_order_and_equals_single_answers(reliable, tmp_path):
    bundle, data = reliable
    rows = [json.loads(line) for line in data[1].read_text().splitlines()]
    folder = tmp_path / "images"
    shutil.copytree(data[1].parent / "images", folder)
    broken = folder / "broken.png"
    broken.write_bytes(b"not a png")
    manifest = tmp_path / "rows.jsonl"
    mixed = [*rows[:5], {"image": str(broken), "text": "what color is the shape?"}, *rows[5:12]]
    manifest.write_text(
        "".join(json.dumps({**r, "image": str(data[1].parent / r["image"])}) + "\n" for r in mixed)
    )
    runner = CliRunner()
    out = tmp_path / "answers.jsonl"
    result = runner.invoke(cli, ["predict", str(bundle), "--data", str(manifest), "--out", str(out)])
    assert result.exit_code == 1 and "1 row(s) could not be read" in result.output
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(answers) == 13 and "broken.png: not an image" in answers[5]["error"]
    with Predictor(bundle) as predictor:
        for row, answer in zip(mixed, answers, strict=True):
            if "error" in answer:
                continue
            single = predictor.predict(data[1].parent / row["image"], row["text"])
            assert answer["label"] == single.label and answer["score"] == pytest.approx(
                single.score, abs=1e-5
            )
    csv_out = tmp_path / "answers.csv"
    from_folder = runner.invoke(
        cli,
        [
            "predict",
            str(bundle),
            "--data",
            str(folder),
            "--text",
            "what color is the shape?",
            "--out",
            str(csv_out),
        ],
    )
    assert from_folder.exit_code == 1  # the broken image again
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "image,text,label,score,abstained,error" and len(lines) == 1 + 65
    assert not list(tmp_path.glob(".*.partial"))
    no_text = runner.invoke(cli, ["predict", str(bundle), "--data", str(folder)])
    assert no_text.exit_code == 2 and "--text" in no_text.output


def test_abstention_marks_low_scores(reliable, sample):
    bundle, _ = reliable
    always = Predictor(bundle, abstain_below=1.0).predict(*sample)
    never = Predictor(bundle, abstain_below=0.0).predict(*sample)
    assert always.abstained and not never.abstained and always.label == never.label
    with pytest.raises(Exception, match="abstain_below must be a score between 0 and 1"):
        Predictor(bundle, abstain_below=2)


# -- drift --------------------------------------------------------------------------------------
LABELS = ("ok", "scratch", "dent")


def _clean(rng: random.Random, label_weights=(0.7, 0.2, 0.1)) -> Signals:
    return Signals(
        label=rng.choices(LABELS, weights=label_weights)[0],
        confidence=min(1.0, rng.betavariate(8, 1.5)),
        abstained=False,
        width=640,
        height=480,
        brightness=rng.gauss(0.55, 0.05),
        contrast=rng.gauss(0.2, 0.03),
        text_tokens=rng.choice([5, 6, 7]),
        unknown_rate=0.0,
    )


def _rows(signals: list[Signals]) -> list[dict]:
    return [{"label": s.label, "abstained": int(s.abstained), **s.numeric()} for s in signals]


def test_drift_triggers_fire_on_shifts_and_not_on_clean_windows():
    """Synthetic signals: 20 windows of 500 clean predictions fire nothing; a brightness or contrast
    change, an unseen class (low confidence, answers piling on one label), a label-mix change and
    longer texts each fire their own trigger within 500 predictions."""
    rng = random.Random(0)
    reference = reference_profile([_clean(rng) for _ in range(2000)])
    clean = [_clean(rng) for _ in range(5000)]
    for _ in range(20):
        assert not check_drift(reference, _rows(rng.choices(clean, k=500))).fired
    shifts = {
        "brightness": lambda s: s.__class__(**{**s.__dict__, "brightness": s.brightness - 0.2}),
        "contrast": lambda s: s.__class__(**{**s.__dict__, "contrast": s.contrast * 0.5}),
        "confidence": lambda s: s.__class__(
            **{**s.__dict__, "confidence": s.confidence * 0.6, "label": "ok"}
        ),
        "label": lambda s: s.__class__(**{**s.__dict__, "label": rng.choice(("scratch", "dent"))}),
        "text_tokens": lambda s: s.__class__(**{**s.__dict__, "text_tokens": s.text_tokens + 12}),
    }
    for name, shift in shifts.items():
        report = check_drift(reference, _rows([shift(_clean(rng)) for _ in range(500)]))
        assert name in {t.signal for t in report.triggers}, (name, report.scores)
    few = check_drift(reference, _rows(clean[:50]), Thresholds(min_rows=100))
    assert not few.fired and "100 are needed" in few.note


def test_monitor_store_records_bounded_and_the_monitor_command_exits_on_a_trigger(reliable, sample, tmp_path):
    bundle, data = reliable
    store = tmp_path / "monitor.db"
    predictor = Predictor(bundle, monitor=store)
    rows = [json.loads(line) for line in data[1].read_text().splitlines()]
    rng = random.Random(0)
    for _ in range(150):
        r = rng.choice(rows)
        predictor.predict(data[1].parent / r["image"], r["text"])
    runner = CliRunner()
    calm = runner.invoke(cli, ["monitor", str(bundle), str(store), "--json"])
    assert calm.exit_code == 0 and json.loads(calm.stdout)["rows"] == 150, calm.output
    dark = tmp_path / "dark.db"
    dim = Predictor(bundle, monitor=dark)
    for _ in range(150):
        r = rng.choice(rows)
        image = Image.open(data[1].parent / r["image"]).convert("RGB").point(lambda v: v // 3)
        dim.predict(image, r["text"])
    fired = runner.invoke(cli, ["monitor", str(bundle), str(dark)])
    assert fired.exit_code == 3 and "TRIGGER brightness" in fired.output and "edge-vl eval" in fired.output
    small = MonitorStore(tmp_path / "small.db", max_rows=40)
    small.record([Signals("a", 0.9, False, 1, 1, 0.5, 0.1)] * 100)
    assert small.count() == 40
    assert runner.invoke(cli, ["monitor", str(bundle), str(tmp_path / "none.db")]).exit_code == 2
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(Exception, match="not a usable SQLite database"):
        MonitorStore(tmp_path / "junk.db").count()


WRITER = textwrap.dedent("""
    import sys
    from edge_vl.runtime.monitor import MonitorStore
    from edge_vl.runtime.signals import Signals
    store = MonitorStore(sys.argv[1], max_rows=10**6)
    for i in range(int(sys.argv[2])):
        store.record([Signals(sys.argv[3], 0.5, False, 1, 1, 0.5, 0.1)])
    print("done")
""")


def test_the_store_survives_two_writers_and_a_kill_mid_write(tmp_path):
    store = tmp_path / "m.db"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(store), "200", name], stdout=subprocess.PIPE)
        for name in ("a", "b")
    ]
    for w in writers:
        assert w.wait(timeout=120) == 0
    assert MonitorStore(store).count() == 400
    victim = subprocess.Popen([sys.executable, "-c", WRITER, str(store), "100000", "c"])
    deadline = time.monotonic() + 120  # a loaded machine (or a fresh venv's first import) starts late
    while MonitorStore(store).count() <= 400 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # killed while it writes, not before
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    after = MonitorStore(store).count()
    assert after > 400
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    MonitorStore(store).record([Signals("d", 0.5, False, 1, 1, 0.5, 0.1)])
    assert MonitorStore(store).count() == after + 1


def test_the_store_writes_through_one_connection_and_a_forked_child_opens_its_own(tmp_path, monkeypatch):
    opened = []
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(a) or connect(*a, **k))
    store = MonitorStore(tmp_path / "m.db")
    row = [Signals("a", 0.5, False, 1, 1, 0.5, 0.1)]
    before = len(opened)
    for _ in range(50):
        store.record(row)
    assert len(opened) - before == 1  # not one connection (and WAL set-up) per prediction
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's exit code is the assertion
        try:
            store.record([Signals("child", 0.5, False, 1, 1, 0.5, 0.1)])
        finally:
            os._exit(0 if store.count() == 51 else 1)
    assert os.waitpid(child, 0)[1] == 0
    store.record(row)  # the parent's connection still works
    store.close()
    assert [r["label"] for r in store.recent(2)] == ["child", "a"] and store.count() == 52
    with sqlite3.connect(tmp_path / "m.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_prometheus_endpoint_on_loopback(reliable, sample, tmp_path):
    from edge_vl.runtime.metrics import PrometheusMetrics

    bundle, _ = reliable
    predictor = Predictor(bundle, monitor=tmp_path / "m.db")
    metrics = PrometheusMetrics(predictor)
    server = metrics.serve(0)
    try:
        port = server.server_address[1]
        for _ in range(3):
            predictor.predict(*sample)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
    assert server.server_address[0] == "127.0.0.1"
    assert "edge_vl_inference_seconds_count 3.0" in text
    assert "edge_vl_answers_total{label=" in text and "edge_vl_abstentions_total" in text
    assert 'edge_vl_drift_psi{signal="brightness"}' in text


def test_operations_benchmark_measures_a_bundle_and_renders_its_results_section(reliable, tmp_path):
    """``examples/benchmarks/operations.py`` (part o of RESULTS.md) runs on a bundle end to end."""
    from examples.benchmarks.results import operations_section

    bundle, (_, evals) = reliable
    out = tmp_path / "operations.json"
    command = [sys.executable, "-m", "examples.benchmarks.operations", str(bundle), "--eval", str(evals)]
    result = subprocess.run([*command, "--threads", "1", "--out", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    measured = json.loads(out.read_text())
    assert measured["throughput"]["rows"] == 32 and measured["throughput"]["identical_answers"]
    assert [m["rows"] for m in measured["memory"]] == [32, 32]  # 1,000 rows asked, 32 there
    for m in measured["memory"]:
        assert 0 < m["rss_loaded_mb"] <= m["peak_rss_mb"] and 0 < m["rss_after_mb"] <= m["peak_rss_mb"]
    assert len(measured["drift"]["clean_triggers"]) == 20 and "darker" in measured["drift"]["shifts"]
    section = "\n".join(operations_section(measured))
    assert "streamed" in section and "| darker |" in section
