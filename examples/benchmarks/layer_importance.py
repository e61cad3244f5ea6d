"""What each DAS arm of edge-vl-mini does for easy-vqa: train the PETL adapters with no layer
skipped, then skip each arm alone (and a few given sets) and measure the held-out loss and the
accuracy per question type.

    python -m examples.benchmarks.layer_importance [--steps 500] [--rows 1000] [--sets "2,5,10,11;0,7,9,10"]

The skipped layer is replaced by its (untrained) skip adapter, i.e. nearly the identity, so this
shows what the model has come to rely on, the signal the DAS search's first rewards see when its
warm-up skips nothing (``edge_vl/training/search.py``). Uses the demo's data and training settings; writes
``examples/benchmarks/results/layer_importance/`` (JSON and Markdown). About 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from edge_vl.config import BuildConfig, TrainConfig
from edge_vl.demo import write_easy_vqa_manifests
from edge_vl.fileio import write_text_atomic
from edge_vl.pipeline import package_versions, prepare, read_data
from edge_vl.runtime.cpu import cpu_name
from edge_vl.training.finetune import TrainLoop, predict_logits
from examples.benchmarks.recorded import this_command

REPO = Path(__file__).resolve().parents[2]
SHAPES = ("circle", "rectangle", "triangle")


def question_type(label: str) -> str:
    """easy-vqa's three question types, read off the answer."""
    return "yes/no" if label in ("yes", "no") else "shape" if label in SHAPES else "colour"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="PETL training steps before measuring")
    parser.add_argument("--rows", type=int, default=1000, help="easy-vqa test questions to measure on")
    parser.add_argument("--sets", default="2,5,10,11;0,7,9,10", help="extra skip sets, ';'-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3, help="adapter lr (committed: 1e-3)")
    parser.add_argument("--out", type=Path, default=REPO / "examples/benchmarks/results/layer_importance")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_jsonl, eval_jsonl = write_easy_vqa_manifests(tmp, eval_size=args.rows, seed=args.seed)
        config = BuildConfig(
            model_dir="edge-vl-mini", train_data=train_jsonl, eval_data=eval_jsonl, out=Path(tmp) / "x",
            progress=False, train=TrainConfig(max_steps=args.steps, lr=args.lr, seed=args.seed),
        )  # fmt: skip
        prep = prepare(config, read_data(config), Path(tmp), print)
    family, model = prep.family, prep.model
    family.set_skipped(model, [])
    loop = TrainLoop(family, model, prep.train_data, config.train)
    loop.run(progress=True, description="PETL (no skipping)")
    data = prep.eval_data
    kinds = [question_type(prep.labels[i]) for i in data.labels.tolist()]
    sets = [[]] + [[i] for i in range(len(prep.layer_names))]
    sets += [sorted(int(i) for i in s.split(",")) for s in args.sets.split(";") if s.strip()]
    rows = []
    for skipped in sets:
        family.set_skipped(model, skipped)
        logits = predict_logits(family, model, data)
        correct = (logits.argmax(-1) == data.labels).tolist()
        per_type = {
            kind: sum(c for c, k in zip(correct, kinds, strict=True) if k == kind) / kinds.count(kind)
            for kind in sorted(set(kinds))
        }
        rows.append({
            "skipped": skipped, "loss": float(loop.loss_fn(logits, data.labels)),
            "accuracy": sum(correct) / len(correct), "accuracy_by_type": per_type,
        })  # fmt: skip
        print(f"skip {skipped!s:16s} loss {rows[-1]['loss']:.4f} accuracy {rows[-1]['accuracy']:.4f}")
    report = {
        "command": this_command(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "versions": package_versions(), "seconds": round(time.perf_counter() - started),
        "steps": args.steps, "eval_rows": len(data), "train_rows": len(prep.train_data),
        "arms": prep.layer_names, "rows": rows,
    }  # fmt: skip
    write(report, args.out)


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "layer_importance.json", json.dumps(report, indent=2) + "\n")
    types = sorted(report["rows"][0]["accuracy_by_type"])
    lines = [
        "# Layer importance of edge-vl-mini on easy-vqa",
        "",
        f"`{report['command']}` on {report['date']} ({report['cpu']}, {report['seconds']} s): PETL "
        f"adapters trained {report['steps']} steps on {report['train_rows']} questions with no layer "
        f"skipped, then each arm skipped alone (its untrained skip adapter ≈ identity); "
        f"{report['eval_rows']} easy-vqa test questions.",
        "",
        "| skipped | arm | held-out loss | accuracy | " + " | ".join(types) + " |",
        "|---|---|---|---|" + "---|" * len(types),
    ]
    for row in report["rows"]:
        s = row["skipped"]
        arm = report["arms"][s[0]] if len(s) == 1 else ("none" if not s else "set")
        by_type = " | ".join(f"{row['accuracy_by_type'][t]:.3f}" for t in types)
        lines.append(f"| {s} | {arm} | {row['loss']:.4f} | {row['accuracy']:.4f} | {by_type} |")
    write_text_atomic(out / "LAYER_IMPORTANCE.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
