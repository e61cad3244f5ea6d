"""FP32 against FP16 weights and NNCF INT8 of one bundle on this machine: accuracy, batch-1 latency
(interleaved), file size and cold start.

The README's precision advice per CPU class must come from measurements on such a CPU, not from
assumption. This script quantizes BUNDLE's FP32 model as a build does (``converters.precision.
quantize_int8``: calibrated on ``--calibration`` seeded training rows, NNCF's overflow fix on CPUs
without VNNI), stores the FP32 graph with FP16 weights as ``save_model(compress_to_fp16=True)``
does (``converters.precision.compress_fp16``; OpenVINO expands them to f32 at load on CPUs), answers
every ``--eval`` row with each model, and times them at batch 1 in interleaved rounds (a fresh random
order each round), next to ``edge-vl bench --target-profile``'s reference-graph ratio. *Cold start*
is the median of ``--cold-starts`` read-and-compile runs from the files (the page cache warm: the
cost of loading, not of the disk). Run it alone on the machine: other work skews the timing.

    edge-vl build --demo --precision fp32 --out <scratch>/fp32
    python -m examples.benchmarks.precision_here <scratch>/fp32 \\
        --train edge-vl-demo/data-full/train.jsonl --eval edge-vl-demo/data-full/eval.jsonl \\
        --out examples/benchmarks/results/precision_here/avx2.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from edge_vl.converters.precision import compress_fp16, evaluate, quantize_int8

from edge_vl.data import read_examples
from edge_vl.fileio import write_text_atomic
from edge_vl.pipeline import package_versions
from edge_vl.runtime.cpu import has_int8_dot_product, machine_info, openvino_core
from edge_vl.runtime.predictor import Predictor
from edge_vl.timing import compile_latency, interleaved_ir_latency, precision_probe, spread
from examples.benchmarks.recorded import portable, this_command
from examples.benchmarks.variants import label_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="an FP32 bundle")
    parser.add_argument("--train", type=Path, required=True, help="training manifest (calibration rows)")
    parser.add_argument("--eval", type=Path, required=True, help="eval manifest (accuracy)")
    parser.add_argument("--calibration", type=int, default=300, help="calibration rows (the build's default)")
    parser.add_argument("--limit", type=int, help="only the first N eval rows")
    parser.add_argument("--runs", type=int, default=200, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, help="OpenVINO threads [all cores]")
    parser.add_argument("--cold-starts", type=int, default=5, help="read-and-compile runs per model")
    parser.add_argument("--work", type=Path, help="keep the INT8 IR here and reuse it on a rerun")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = parser.parse_args()
    vnni = has_int8_dot_product()
    with Predictor(args.bundle, threads=args.threads, warmup=False) as predictor:
        if predictor.bundle.manifest.model.precision != "fp32":
            raise SystemExit(f"{args.bundle}: an FP32 bundle is needed (build it with --precision fp32), "
                             f"this one is {predictor.bundle.manifest.model.precision}")  # fmt: skip
        fp32 = args.bundle / predictor.bundle.manifest.model.xml
        evals = read_examples(args.eval)[: args.limit]
        labels = np.array(label_indices(evals, predictor.labels, args.eval))  # before the slow part
        train = read_examples(args.train)
        rows = random.Random(0).sample(train, min(args.calibration, len(train)))
        feeds = [predictor.prepare([r.image], [r.text]) for r in rows]
        with tempfile.TemporaryDirectory() as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            int8, source = work / "model-int8.xml", work / "model-int8.source"
            # the INT8 IR is reused only if it was made from these FP32 weights and this many rows
            made_from = f"{hashlib.sha256(fp32.with_suffix('.bin').read_bytes()).hexdigest()} {len(feeds)}\n"
            if not (
                int8.with_suffix(".bin").is_file() and source.is_file() and source.read_text() == made_from
            ):
                print(f"quantizing on {len(feeds)} calibration rows (VNNI: {vnni})", flush=True)
                int8 = quantize_int8(fp32, feeds, work, vnni=vnni, size=len(feeds))
                write_text_atomic(source, made_from)
            fp16 = compress_fp16(fp32, work)

            def batches():
                for i in range(0, len(evals), 64):
                    part = evals[i : i + 64]
                    yield predictor.prepare([r.image for r in part], [r.text for r in part])

            print(f"answering {len(evals)} eval rows with FP32, FP16 weights and INT8", flush=True)
            models = {"fp32": fp32, "fp16": fp16, "int8": int8}
            sizes = {name: xml.with_suffix(".bin").stat().st_size for name, xml in models.items()}
            cold = {name: cold_start_ms(xml, args.threads, args.cold_starts) for name, xml in models.items()}
            answers = {name: evaluate(xml, batches()) for name, xml in models.items()}
            feed = predictor.prepare([evals[0].image], [evals[0].text])
            print(f"timing batch 1, {args.runs} interleaved rounds", flush=True)
            times = interleaved_ir_latency(models, dict.fromkeys(models, feed), args.runs, args.threads)
    latency = {name: spread(t) for name, t in times.items()}
    report = {
        "command": this_command(),
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "vnni": vnni},
        "versions": package_versions(),
        "bundle": portable(str(args.bundle)),
        "threads": args.threads,
        "calibration_rows": len(feeds),
        "eval_rows": len(evals),
        "accuracy": {name: float(np.mean(a == labels)) for name, a in answers.items()},
        "int8_agreement_with_fp32": float(np.mean(answers["int8"] == answers["fp32"])),
        "fp16_agreement_with_fp32": float(np.mean(answers["fp16"] == answers["fp32"])),
        "weights_bytes": sizes,
        "cold_start_ms": cold,
        "latency_ms": latency,
        "int8_speedup": latency["fp32"]["median"] / latency["int8"]["median"],
        "reference_graph": precision_probe(threads=args.threads),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    shown = ("accuracy", "fp16_agreement_with_fp32", "weights_bytes", "cold_start_ms", "latency_ms")
    print(json.dumps({k: report[k] for k in shown}, indent=1))
    print(f"reference graph INT8 speed-up: {report['reference_graph']['int8_speedup']:.2f}×")


def cold_start_ms(xml: Path, threads: int | None, runs: int) -> float:
    """Median milliseconds to read ``xml`` (and its weights) and compile it, as a Predictor starts."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        compiled = compile_latency(openvino_core().read_model(str(xml)), threads)
        times.append((time.perf_counter() - started) * 1e3)
        del compiled
    return float(np.median(times))


if __name__ == "__main__":
    main()
