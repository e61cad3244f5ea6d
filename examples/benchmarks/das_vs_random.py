"""DAS-k against random k-layer skip sets (and PETL-only, no skipping) with the same fine-tune budget.

Every variant is a full `edge-vl build` (fresh adapters, same seed, same steps); only the skip set
differs. Results go to a JSON file and a Markdown table with the machine and versions.

    python examples/benchmarks/das_vs_random.py --model DIR --data train.jsonl --eval-data eval.jsonl \\
        --k 4 --random-sets 3 --out examples/benchmarks/results/das_vs_random

Without --data/--eval-data it uses easy-vqa (needs the 'demo' extra): --train-size questions from
the training split and the whole test split. A meaningful comparison needs a *pretrained* model:
on random weights every layer is equally useless and the differences are noise.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from edge_vl.build import BuildConfig, build
from edge_vl.finetune import TrainConfig
from edge_vl.search import SearchConfig


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="das-vs-random-"))
    train, evals = args.data, args.eval_data
    if train is None or evals is None:
        from edge_vl.demo import write_easy_vqa_manifests

        train, evals = write_easy_vqa_manifests(
            work / "data", train_size=args.train_size, eval_size=args.eval_size
        )
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    search_cfg = SearchConfig(epochs=args.search_epochs, das_turn=args.das_turn)

    def variant(name: str, **plan) -> dict:
        out = work / name
        result = build(
            BuildConfig(model_dir=args.model, train_data=train, eval_data=evals, out=out, train=train_cfg,
                        search=search_cfg, progress=False, **plan),
            echo=lambda line: print(f"[{name}] {line}", flush=True),
        )  # fmt: skip
        m = result.manifest
        return {
            "variant": name,
            "skipped": m["architecture"]["skipped"],
            "eval_accuracy": m["metrics"]["eval_accuracy"],
            "retained_macs_fraction": m["cost"]["retained_fraction"],
            "trainable_parameters": m["training"]["trainable_parameters"],
            "arms": len(m["architecture"]["arms"]),
        }

    rows = [variant("petl-only", skip_layers=[]), variant(f"das-{args.k}", skip=args.k)]
    n_arms = rows[0]["arms"]
    rng = random.Random(args.seed)
    sets: list[list[int]] = []
    while len(sets) < min(args.random_sets, math.comb(n_arms, args.k)):  # distinct random sets
        candidate = sorted(rng.sample(range(n_arms), args.k))
        if candidate not in sets:
            sets.append(candidate)
    for r, skip_layers in enumerate(sets):
        rows.append(variant(f"random-{args.k}-{r}", skip_layers=skip_layers))
    randoms = [row["eval_accuracy"] for row in rows if row["variant"].startswith("random")]
    das = next(row for row in rows if row["variant"].startswith("das"))["eval_accuracy"]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "model": str(args.model), "train_data": str(train), "eval_data": str(evals), "k": args.k,
        "train": train_cfg.to_dict(), "search": search_cfg.to_dict(), "rows": rows,
        "das_accuracy": das, "random_mean_accuracy": sum(randoms) / len(randoms) if randoms else None,
    }  # fmt: skip


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# DAS-{report['k']} vs random-{report['k']} skip sets",
        "",
        f"Model `{report['model']}`; generated {report['date']} by `examples/benchmarks/das_vs_random.py`.",
        "",
        "| variant | skipped layers | eval accuracy | retained MACs | trainable params |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['variant']} | {row['skipped']} | {row['eval_accuracy']:.4f} | "
            f"{row['retained_macs_fraction']:.1%} | {row['trainable_parameters']:,} |"
        )
    lines += [
        "",
        f"DAS accuracy {report['das_accuracy']:.4f}; "
        f"mean of random sets {report['random_mean_accuracy']:.4f}.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path)
    p.add_argument("--eval-data", type=Path)
    p.add_argument("--train-size", type=int, default=12000)
    p.add_argument("--eval-size", type=int, default=None)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--random-sets", type=int, default=3)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--search-epochs", type=int, default=3)
    p.add_argument("--das-turn", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "das_vs_random")
    args = p.parse_args()
    report = run(args)
    write(report, args.out)
    print(json.dumps({k: report[k] for k in ("das_accuracy", "random_mean_accuracy")}))


if __name__ == "__main__":
    main()
