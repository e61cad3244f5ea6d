"""Accuracy and compute of the demo's variants, each trained with the same budget, on one machine.

Rows: the majority answer; full fine-tuning of the fusion stack (no adapters, no skipping);
PETL-only (adapters, no skipping); DAS-k (the default demo bundle: k arms skipped by the search);
and random k-sets (distinct, seeded). Every adapter variant is a complete ``edge-vl build`` with the
demo's settings (:data:`edge_vl.demo.FULL_DEMO`): same data, seed and fine-tune steps; only the
skip set differs. Writes ``variants.json``, ``variants.md`` and the report (``report.html`` with
the accuracy-vs-MACs plot) into ``--out``.

    python examples/benchmarks/variants.py --out examples/benchmarks/results/edge-vl-mini

Takes about two hours on 2 cores with the defaults (``--quick``: minutes, for a smoke run);
``--das-bundle BUNDLE`` takes the DAS row from a finished ``edge-vl build --demo`` (its settings
are checked against the other variants') and saves the 20 minutes of building it again.
A meaningful comparison needs a pretrained model: on random weights every layer is equally
useless and the differences are noise.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from edge_vl.architectures.quiet import quiet_transformers
from edge_vl.build import BuildConfig, build, package_versions, prepare, read_data
from edge_vl.bundle import read_bundle, write_text_atomic
from edge_vl.data import read_examples
from edge_vl.demo import FULL_DEMO, QUICK_DEMO, write_easy_vqa_manifests
from edge_vl.finetune import TrainConfig, TrainLoop, accuracy, predict_logits
from edge_vl.report import write_report
from edge_vl.runtime.cpu import cpu_name
from edge_vl.search import SearchConfig


def majority(train: Path, evals: Path) -> dict[str, Any]:
    """Always answer the most frequent training label."""
    answer = Counter(e.label for e in read_examples(train, check_images=False)).most_common(1)[0][0]
    rows = read_examples(evals, check_images=False)
    acc = sum(e.label == answer for e in rows) / len(rows)
    return {"variant": "majority answer", "eval_accuracy": acc, "retained_macs_fraction": 0.0, "skipped": []}


def full_finetune(config: BuildConfig) -> dict[str, Any]:
    """Fine-tune every weight of the last layer list (the fusion stack) plus pooler and head; no
    adapters, nothing skipped, encoders frozen — what a user would do without PETL."""
    with tempfile.TemporaryDirectory() as work:
        prep = prepare(config, read_data(config), Path(work), print)
    family = prep.family
    torch.manual_seed(config.train.seed)
    with quiet_transformers():
        model = family.load(Path(config.model_dir), prep.labels)  # no adapters
    family.freeze(model)  # leaves the head (and the family's trainable extras) trainable
    for layer in family.layer_lists(model)[-1]:
        layer.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train = TrainConfig(
        **{**config.train.to_dict(), "lr": config.train.lr / 10}
    )  # full FT wants a smaller lr
    TrainLoop(family, model, prep.train_data, train).run(progress=False)
    acc = accuracy(predict_logits(family, model, prep.eval_data), prep.eval_data.labels)
    return {"variant": "full fine-tune of the fusion stack", "eval_accuracy": acc,
            "retained_macs_fraction": 1.0, "skipped": [], "trainable_parameters": trainable}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = QUICK_DEMO if args.quick else FULL_DEMO
    work = Path(tempfile.mkdtemp(prefix="edge-vl-variants-"))
    train, evals = write_easy_vqa_manifests(
        work / "data", train_size=settings.train_size, eval_size=settings.eval_size
    )
    train_cfg = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, seed=args.seed)
    search_cfg = SearchConfig(epochs=settings.search_epochs, max_rows=settings.search_rows)

    def config(name: str, **plan) -> BuildConfig:
        return BuildConfig(model_dir=args.model, train_data=train, eval_data=evals, out=work / name,
                           train=train_cfg, search=search_cfg, progress=False, **plan)  # fmt: skip

    manifests: dict[str, dict] = {}
    partial: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)

    def record(name: str, m: dict[str, Any], seconds: float) -> dict[str, Any]:
        manifests[name] = m
        row = {"variant": name, "eval_accuracy": m["metrics"]["eval_accuracy"],
                "retained_macs_fraction": m["cost"]["retained_fraction"],
                "skipped": m["architecture"]["skipped"],
                "latency_ms": m["metrics"].get("latency_ms", {}).get("retained"),
                "trainable_parameters": m["training"]["trainable_parameters"],
                "trainable_fraction": m["training"]["trainable_fraction"],
                "seconds": round(seconds)}  # fmt: skip
        partial.append(row)  # a crash later on keeps what was measured
        write_text_atomic(args.out / "variants.partial.json", json.dumps(partial, indent=2) + "\n")
        return row

    def variant(name: str, **plan) -> dict[str, Any]:
        started = time.perf_counter()
        result = build(config(name, **plan), echo=lambda line: print(f"[{name}] {line}", flush=True))
        return record(name, result.manifest, time.perf_counter() - started)

    if args.das_bundle is not None:  # the demo's bundle, already built with these settings
        manifest = read_bundle(args.das_bundle).manifest
        check_same_settings(manifest, config("das"), len(read_examples(train, check_images=False)))
        das = record("das", manifest, manifest["training"]["seconds"])
    else:  # the demo's bundle, with the precision measured too (``eval_accuracy`` is the torch one)
        das = variant("das", skip=args.k, text_buckets=settings.text_buckets, precision=args.precision)
    rows = [majority(train, evals), variant("petl-only", skip_layers=[]), das]
    n_arms = len(manifests["das"]["architecture"]["arms"])
    rng = random.Random(args.seed)
    sets: list[list[int]] = []
    while len(sets) < min(args.random_sets, math.comb(n_arms, das_k := len(das["skipped"]))):
        candidate = sorted(rng.sample(range(n_arms), das_k))
        if candidate not in sets:
            sets.append(candidate)
    for r, skip_layers in enumerate(sets):
        rows.append(variant(f"random-{r}", skip_layers=skip_layers))
    if not args.no_full_finetune:
        rows.insert(1, full_finetune(config("full-ft")))
    randoms = [row["eval_accuracy"] for row in rows if row["variant"].startswith("random")]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python examples/benchmarks/variants.py", *sys.argv[1:]]),
        "machine": {"cpu": cpu_name(), "cores": _cores(), "python": platform.python_version()},
        "versions": package_versions(), "model": str(args.model), "settings": settings.__dict__,
        "train_examples": manifests["das"]["metrics"]["train_examples"],
        "eval_examples": manifests["das"]["metrics"]["eval_examples"],
        "k": das_k, "arms": n_arms, "rows": rows, "das_accuracy": das["eval_accuracy"],
        "petl_only_accuracy": rows[[r["variant"] for r in rows].index("petl-only")]["eval_accuracy"],
        "das_precision": manifests["das"].get("precision"),
        "random_mean_accuracy": sum(randoms) / len(randoms) if randoms else None,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    others = [{k: r.get(k) for k in ("variant", "eval_accuracy", "retained_macs_fraction", "skipped",
                                     "latency_ms")} for r in rows if r["variant"] != "das"]  # fmt: skip
    write_report(args.out, manifests["das"], others)
    (args.out / "variants.partial.json").unlink(missing_ok=True)
    if args.keep is not None:
        shutil.rmtree(args.keep, ignore_errors=True)
        shutil.move(work, args.keep)
        print(f"kept the bundles and data in {args.keep}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return report


def check_same_settings(manifest: dict[str, Any], config: BuildConfig, n_train: int) -> None:
    """Refuse a DAS bundle (``--das-bundle``) not built with the settings of the other variants."""
    training, plan = manifest["training"], manifest.get("skip_plan", {})
    expected = {
        "skip plan": ("das", plan.get("method")),
        "training rows": (n_train, manifest["metrics"]["train_examples"]),
        "epochs": (config.train.epochs, training["epochs"]),
        "batch size": (config.train.batch_size, training["batch_size"]),
        "seed": (config.train.seed, training["seed"]),
        "lr": (config.train.lr, training["lr"]),
        "loss": (config.train.loss, training["loss"]),
        "search": (config.search.to_dict(), plan.get("search_config")),
    }
    wrong = [f"{k}: {got!r} (variants use {want!r})" for k, (want, got) in expected.items() if want != got]
    if wrong:
        raise SystemExit("--das-bundle was built with other settings: " + "; ".join(wrong))


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def write(report: dict[str, Any], out: Path) -> None:
    write_text_atomic(out / "variants.json", json.dumps(report, indent=2) + "\n")
    lines = [
        "# edge-vl-mini on easy-vqa: variants with the same training budget",
        "",
        f"Generated {report['date']} by `{report['command']}` on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores); {report['train_examples']:,} training and "
        f"{report['eval_examples']:,} test questions; k = {report['k']} of {report['arms']} arms.",
        "",
        "| variant | skipped arms | eval accuracy | MACs vs full model | latency ms (batch 1) | trainable |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lat = row.get("latency_ms")
        trainable = row.get("trainable_parameters")
        lines.append(
            f"| {row['variant']} | {row.get('skipped') or '–'} | {row['eval_accuracy']:.4f} | "
            f"{row['retained_macs_fraction']:.1%} | {'–' if lat is None else f'{lat:.2f}'} | "
            f"{'–' if trainable is None else f'{trainable:,}'} |"
        )
    random_mean = report["random_mean_accuracy"]
    lines += [
        "",
        f"DAS-{report['k']}: {report['das_accuracy']:.4f}; PETL-only: {report['petl_only_accuracy']:.4f}; "
        f"mean of the random {report['k']}-sets: {'–' if random_mean is None else f'{random_mean:.4f}'}.",
    ]
    precision = report.get("das_precision")
    if precision:
        lines += [
            "",
            f"Precision of the DAS bundle (`--precision {precision['requested']}`), each candidate exported, "
            "evaluated on the same test questions with OpenVINO and timed at batch 1 in this run:",
            "",
            "| precision | accuracy | top-1 agreement with fp32 | latency ms | size MB |",
            "|---|---|---|---|---|",
        ]
        for c in precision["candidates"]:
            lines.append(f"| {c['precision']} | {c['accuracy']:.4f} | {c['agreement_with_fp32']:.4f} | "
                         f"{c['latency_ms']:.2f} | {c['size_bytes'] / 1e6:.1f} |")  # fmt: skip
        lines += ["", f"Chosen: {precision['reason']}."]
    lines += [
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(report["versions"].items())) + ".",
        "Plots: [report.html](report.html).",
    ]
    write_text_atomic(out / "variants.md", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="edge-vl-mini", help="checkpoint directory or shipped model name")
    p.add_argument("--k", type=int, default=None, help="arms to skip [default: a third]")
    p.add_argument("--random-sets", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="the --quick demo settings (smoke run)")
    p.add_argument("--no-full-finetune", action="store_true")
    p.add_argument("--precision", default="auto", help="precision of the DAS bundle (fp32|fp16|int8|auto)")
    p.add_argument("--keep", type=Path, default=None, help="move the bundles and manifests here")
    p.add_argument("--das-bundle", type=Path, default=None,
                   help="take the DAS row from this bundle of `edge-vl build --demo` (same settings, "
                        "checked) instead of building it again")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "edge-vl-mini")
    args = p.parse_args()
    report = run(args)
    write(report, args.out)
    print(f"wrote {args.out / 'variants.md'}")
    print(json.dumps({k: report[k] for k in ("das_accuracy", "petl_only_accuracy", "random_mean_accuracy")}))


if __name__ == "__main__":
    main()
