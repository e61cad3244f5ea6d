"""After deployment, measured on a real bundle (issue #34): batch throughput against a one-by-one
loop, memory over a long stream, the calibration's reliability on the eval rows, and which drift
triggers fire on clean and on shifted inputs.

    python -m examples.benchmarks.operations BUNDLE --eval edge-vl-demo/data-full/eval.jsonl \\
        --out examples/benchmarks/results/operations/demo.json

Parts (all on this machine, OpenVINO, 2 threads unless ``--threads``):

- *throughput*: the eval rows (or the first ``--rows``) answered one by one (``Predictor.predict``, latency
  hint) and streamed (:func:`edge_vl.runtime.stream.predict_stream`, throughput hint, decoding
  overlapping inference); rows per second of each, whether every answer is the same, and the
  resident memory of a stream of 1,000 rows and of all rows (each in a fresh process): the peak,
  and the resident size once the model is loaded and after the stream (the peak alone may be set
  while the model compiles, hiding growth).
- *calibration*: the bundle's recorded calibration and abstention, and, with the recorded
  threshold, the precision and coverage of the answered rows on all eval rows.
- *drift*: the eval rows' signals recorded through the Predictor, then 20 bootstrap windows of 500
  clean rows and one window of 500 rows for each shift (darker images, flatter contrast, images of
  another kind — scikit-learn's digits —, one answer kind only, longer questions): the triggers
  that fire.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from edge_vl.data import Example, read_examples
from edge_vl.fileio import write_text_atomic
from edge_vl.runtime.cpu import machine_info
from edge_vl.runtime.monitor import MonitorStore, check_drift
from edge_vl.runtime.predictor import Predictor
from edge_vl.runtime.stream import predict_stream
from examples.benchmarks.recorded import portable, this_command

WINDOW = 500


def throughput(bundle: Path, rows: list[Example], threads: int) -> dict[str, Any]:
    """Rows per second one by one and streamed, and whether they answer alike."""
    with Predictor(bundle, threads=threads) as one:
        pairs = list(one.inputs_of(rows))
        started = time.perf_counter()
        single = [one.predict(image, text) for image, text in pairs]
        single_s = time.perf_counter() - started
    with Predictor(bundle, threads=threads, performance_hint="throughput") as many:
        started = time.perf_counter()
        streamed = [p for _, p, _ in predict_stream(many, pairs)]
        stream_s = time.perf_counter() - started
    same = all(
        a.label == b.label and abs(a.score - b.score) < 1e-5 for a, b in zip(single, streamed, strict=True)
    )
    return {
        "rows": len(rows),
        "one_by_one_rows_per_s": len(rows) / single_s,
        "streamed_rows_per_s": len(rows) / stream_s,
        "speedup": single_s / stream_s,
        "identical_answers": same,
    }


PEAK = """
import json, resource, sys
from edge_vl.data import read_examples
from edge_vl.runtime.predictor import Predictor
from edge_vl.runtime.stream import predict_stream
bundle, data, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = read_examples(data, check_images=False)[:n]
def rss_mb():  # resident now (Linux); the peak alone may be set while the model compiles
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
p = Predictor(bundle, threads=threads, performance_hint="throughput")
loaded = rss_mb()
for _ in predict_stream(p, p.inputs_of(rows)):
    pass
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": len(rows), "peak_rss_mb": peak, "rss_loaded_mb": loaded, "rss_after_mb": rss_mb()}))
"""


def peak_memory(bundle: Path, data: Path, rows: int, threads: int) -> dict[str, Any]:
    """Peak resident memory of a fresh process streaming ``rows`` rows."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(bundle), str(data), str(rows), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def calibration(bundle: Path, rows: list[Example], threads: int) -> dict[str, Any]:
    """The recorded calibration, and the answered rows' precision at the recorded threshold."""
    with Predictor(bundle, threads=threads, performance_hint="throughput") as predictor:
        manifest = predictor.bundle.manifest
        answers = [p for _, p, _ in predict_stream(predictor, predictor.inputs_of(rows))]
    right = np.array([a.label == r.label for a, r in zip(answers, rows, strict=True)])
    answered = np.array([not a.abstained for a in answers])
    return {
        "calibration": None if manifest.calibration is None else manifest.calibration.__dict__,
        "abstention": None if manifest.abstention is None else manifest.abstention.__dict__,
        "accuracy": float(right.mean()),
        "answered": float(answered.mean()),
        "precision_of_answered": float(right[answered].mean()) if answered.any() else None,
    }


def _shifted(rows: list[Example], kind: str, rng: random.Random, digits: list[Path]) -> list[tuple[Any, str]]:
    """``WINDOW`` (image, text) inputs of one shift."""
    picked = rng.choices(rows, k=WINDOW)
    if kind == "darker":
        return [
            (ImageEnhance.Brightness(Image.open(r.image).convert("RGB")).enhance(0.5), r.text) for r in picked
        ]
    if kind == "flatter":
        return [
            (ImageEnhance.Contrast(Image.open(r.image).convert("RGB")).enhance(0.4), r.text) for r in picked
        ]
    if kind == "unseen images":
        return [(rng.choice(digits), r.text) for r in picked]
    if kind == "one answer kind":  # only rows of the rarest answer: the answers' mix changes
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.label] = counts.get(r.label, 0) + 1
        rarest = min(counts, key=lambda label: (counts[label], label))
        return [(r.image, r.text) for r in rng.choices([r for r in rows if r.label == rarest], k=WINDOW)]
    if kind == "longer questions":
        return [
            (r.image, f"{r.text} please look at the whole picture carefully before you answer")
            for r in picked
        ]
    return [(r.image, r.text) for r in picked]


def drift(bundle: Path, rows: list[Example], threads: int, seed: int = 0) -> dict[str, Any]:
    """Triggers on 20 clean bootstrap windows and on one window of each shift."""
    from sklearn.datasets import load_digits

    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="edge-vl-drift-"))
    digits = []
    for i, pixels in enumerate(load_digits().images[:200]):
        path = work / f"digit-{i}.png"
        Image.fromarray((255 - pixels * 255 / 16).astype("uint8"), "L").resize((64, 64)).save(path)
        digits.append(path)
    store = MonitorStore(work / "clean.db", max_rows=10**6)
    with Predictor(bundle, threads=threads, performance_hint="throughput", monitor=store) as predictor:
        takes_text = predictor.takes_text
        for _ in predict_stream(predictor, predictor.inputs_of(rows)):
            pass
        reference = predictor.bundle.manifest.reference
    recorded = store.recent(len(rows))
    clean = [
        sorted(t.signal for t in check_drift(reference, rng.choices(recorded, k=WINDOW)).triggers)
        for _ in range(20)
    ]
    shifts = {}
    for kind in ("darker", "flatter", "unseen images", "one answer kind", "longer questions"):
        shifted = MonitorStore(work / f"{kind}.db")
        with Predictor(bundle, threads=threads, performance_hint="throughput", monitor=shifted) as predictor:
            inputs = [(im, text if takes_text else None) for im, text in _shifted(rows, kind, rng, digits)]
            for _ in predict_stream(predictor, inputs):
                pass
        report = check_drift(reference, shifted.recent(WINDOW))
        shifts[kind] = {"triggers": sorted(t.signal for t in report.triggers), "scores": report.scores}
    return {"window": WINDOW, "clean_windows": 20, "clean_triggers": clean, "shifts": shifts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--eval", type=Path, required=True, help="the bundle's eval rows (JSONL or CSV)")
    parser.add_argument("--rows", type=int, default=None, help="rows of the throughput comparison [all]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = read_examples(args.eval, check_images=False)
    report = {
        "command": this_command(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "bundle": portable(str(args.bundle.resolve())),
        "throughput": throughput(args.bundle, rows[: args.rows], args.threads),
        "memory": [peak_memory(args.bundle, args.eval, n, args.threads) for n in (1000, len(rows))],
        "calibration": calibration(args.bundle, rows, args.threads),
        "drift": drift(args.bundle, rows, args.threads),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("throughput", "memory")}, indent=2))
    print(f"wrote {args.out}; peak RSS by rows: {[m['peak_rss_mb'] for m in report['memory']]}")


if __name__ == "__main__":
    main()
