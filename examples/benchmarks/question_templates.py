"""Accuracy per question template of demo bundles: where fine-tunes of the same task differ.

For each bundle, answers every row of an eval manifest on OpenVINO (``edge_vl.Predictor``, one
thread) and reports the accuracy per question template (the question with each answer word as
``<answer>``) next to the template's majority-answer share — a template answered at that share is
answered from the prior, without looking at the picture (:func:`variants.accuracy_by_question`).
Used to see why seeds and skip sets of the demo land points apart (issue #17's fine-tune spread).

    python -m examples.benchmarks.question_templates --eval edge-vl-demo/data-full/eval.jsonl \\
        --bundle A=runs/a/bundle --bundle B=runs/b/bundle --out results/templates.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch

from edge_vl.data import read_examples
from edge_vl.fileio import write_text_atomic
from edge_vl.runtime.predictor import Predictor
from examples.benchmarks.recorded import portable, this_command
from examples.benchmarks.variants import accuracy_by_question, label_indices


def template_accuracy(bundle: Path, rows: list, source: Path, batch: int = 64) -> dict:
    """Overall and per-template accuracy of ``bundle`` on the rows of the manifest ``source``."""
    with Predictor(bundle, threads=1) as predictor:
        names = list(predictor.labels)
        labels = torch.tensor(label_indices(rows, names, source))
        logits = np.concatenate([
            predictor.logits([r.image for r in rows[i : i + batch]], [r.text for r in rows[i : i + batch]])
            for i in range(0, len(rows), batch)
        ])  # fmt: skip
    scores = torch.from_numpy(logits)
    return {
        "accuracy": float((scores.argmax(-1) == labels).float().mean()),
        "templates": accuracy_by_question(scores, labels, names, [r.text for r in rows]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="eval manifest (JSONL or CSV)")
    parser.add_argument("--bundle", action="append", required=True, metavar="NAME=DIR", help="a bundle")
    parser.add_argument("--limit", type=int, help="only the first N eval rows")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = parser.parse_args()
    rows = read_examples(args.eval)[: args.limit]
    results = {}
    for spec in args.bundle:
        name, _, folder = spec.partition("=")
        results[name] = {"bundle": portable(folder), **template_accuracy(Path(folder), rows, args.eval)}
        print(f"{name}: {results[name]['accuracy']:.4f}", flush=True)
    report = {
        "command": this_command(),
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "eval_rows": len(rows),
        "bundles": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
