"""A task whose question is fixed, built end to end with the demo model (issue #33, acceptance 6):
``digits-fixed`` (every row asks "what digit is this?") built twice with the same seed and skip
set, once as the build does by default (the question folded into the graph, no text tower) and
once with ``--no-fold-text``; both pairs with FP16 weights (the default) and with FP32. Compared on
every eval row through the Predictor (logits, answers, accuracy), by MACs from the manifests, and
by batch-1 latency in one interleaved run per pair.

    python -m examples.benchmarks.fixed_question --work <scratch>/fixed \\
        --out examples/benchmarks/results/fixed_question/vnni-epyc.json

Resumable: finished builds are reused (a rerun only measures again). Each build takes a few
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from examples.benchmarks.processes import run_build
from examples.benchmarks.recorded import portable, write_results
from examples.benchmarks.tasks import build_command, data_folder

VARIANTS = {"folded": [], "text tower": ["--no-fold-text"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the data and builds (resumable)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--skip-layers", default="2,3,10,11", help="the skip set of both builds")
    parser.add_argument("--precisions", default="fp16,fp32", help="a pair of builds per --precision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=30, help="interleaved rounds of the latency comparison")
    args = parser.parse_args()
    base = build_command("digits-fixed", args.work)  # writes the task's rows once
    evals = data_folder("digits-fixed", args.work) / "eval.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    results: dict[str, Any] = {"task": "digits-fixed", "precisions": {}}
    for precision in args.precisions.split(","):
        bundles, rows = {}, {}
        for name, extra in VARIANTS.items():
            run = name.replace(" ", "-")
            command = [*base, "--skip-layers", args.skip_layers, "--seed", str(args.seed)]
            command += ["--precision", precision, "--quiet", *extra]
            print(f"{precision}, {name}: building (or resuming) …", flush=True)
            rows[name] = run_build(run, args.work / precision, command, env)
            bundles[name] = args.work / precision / run / "bundle"
        measured = compare(bundles["folded"], bundles["text tower"], evals, args.runs)
        results["precisions"][precision] = {"builds": rows, **measured}
    write_results(args.out, results)
    for precision, r in results["precisions"].items():
        print(precision, json.dumps({k: v for k, v in r.items() if k != "builds"}, indent=2))


def compare(folded: Path, tower: Path, evals: Path, runs: int) -> dict[str, Any]:
    """Logits and answers of both bundles on every eval row, their MACs and their latency."""
    from edge_vl.data import read_examples
    from edge_vl.runtime.predictor import Predictor
    from edge_vl.timing import interleaved_ir_latency, spread

    rows = read_examples(evals)
    images, texts = [r.image for r in rows], [r.text for r in rows]
    with Predictor(folded) as a, Predictor(tower) as b:
        if a.bundle.manifest.model.folded_texts is None or b.bundle.manifest.model.folded_texts is not None:
            sys.exit(f"{folded} must be folded and {tower} must carry its text tower")
        got, expected = a.logits(images, texts), b.logits(images, texts)
        feed = {**b.prepare(images[:1], texts[:1]), **a.prepare(images[:1], texts[:1])}
        manifests = {"folded": a.bundle.manifest, "text tower": b.bundle.manifest}
        xmls = {
            name: path / manifests[name].model.xml
            for name, path in (("folded", folded), ("text tower", tower))
        }
    labels = [list(manifests["folded"].head.labels).index(r.label) for r in rows]
    times = interleaved_ir_latency(xmls, dict.fromkeys(xmls, feed), runs)
    return {
        "rows": len(rows),
        "max_abs_logit_difference": float(np.max(np.abs(got - expected))),
        "max_abs_logit": float(np.max(np.abs(expected))),
        "same_answers": int(np.sum(got.argmax(-1) == expected.argmax(-1))),
        "variants": {
            name: {
                "bundle": portable(str(path)),
                "accuracy": float(np.mean(logits.argmax(-1) == labels)),
                "macs": manifests[name].cost.retained_model,
                "inputs": [s.name for s in manifests[name].model.inputs],
                "bytes": sum(p.stat().st_size for p in path.iterdir() if p.is_file()),
                "latency_ms": spread(times[name]),
            }
            for name, path, logits in (("folded", folded, got), ("text tower", tower, expected))
        },
    }


if __name__ == "__main__":
    main()
