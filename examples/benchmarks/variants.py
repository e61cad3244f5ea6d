"""Accuracy and compute of the demo's variants, each trained with the same budget, on one machine.

Rows: the majority answer; full fine-tuning of the fusion stack (no adapters, no skipping);
PETL-only (adapters, no skipping); DAS-k (the default demo bundle: k arms skipped by the search);
and random k-sets (distinct, seeded). Every adapter variant is a complete ``edge-vl build`` with the
demo's settings (:data:`edge_vl.demo.FULL_DEMO`): same data, seed and fine-tune steps; only the
skip set differs. Writes ``variants.json``, ``variants.md`` and the report (``report.html`` with
the accuracy-vs-MACs plot) into ``--out``.

    python -m examples.benchmarks.variants --out examples/benchmarks/results/edge-vl-mini

Takes about two hours on 2 cores with the defaults (``--quick``: minutes, for a smoke run);
``--das-bundle BUNDLE`` takes the DAS row from a finished ``edge-vl build --demo --lr LR`` (its settings
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
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from edge_vl.bundle import read_bundle
from edge_vl.config import BuildConfig, SearchConfig, TrainConfig
from edge_vl.data import read_examples
from edge_vl.demo import FULL_DEMO, QUICK_DEMO, write_easy_vqa_manifests
from edge_vl.errors import Interrupted
from edge_vl.fileio import write_text_atomic
from edge_vl.manifest import Manifest
from edge_vl.pipeline import build, package_versions, prepare, read_data
from edge_vl.report import write_report
from edge_vl.runtime.cpu import machine_info
from edge_vl.training.architectures.quiet import quiet_transformers
from edge_vl.training.finetune import TrainLoop, accuracy, predict_logits
from examples.benchmarks.recorded import portable, this_command


def majority(train: Path, evals: Path) -> dict[str, Any]:
    """Always answer the most frequent training label."""
    answer = Counter(e.label for e in read_examples(train, check_images=False)).most_common(1)[0][0]
    rows = read_examples(evals, check_images=False)
    acc = sum(e.label == answer for e in rows) / len(rows)
    return {"variant": "majority answer", "eval_accuracy": acc, "retained_macs_fraction": 0.0, "skipped": []}


FULL_FINETUNE = "full fine-tune of the fusion stack"


def full_finetune(config: BuildConfig) -> dict[str, Any]:
    """Fine-tune every weight of the last layer list (the fusion stack) plus pooler and head; no
    adapters, nothing skipped, encoders frozen — what a user would do without PETL."""
    result = train_and_score(config, full=True)
    return {"variant": FULL_FINETUNE, "eval_accuracy": result["eval_accuracy"], "retained_macs_fraction": 1.0,
            "skipped": [], "trainable_parameters": result["trainable_parameters"]}  # fmt: skip


#: parts of a fusion-stack layer (a BERT layer) that PETL may also train in full: parameter names
#: below the adapter wrapper
FUSION_PARTS = {"attention": r"layer\.attention\.self\.", "ffn": r"layer\.(intermediate|output)\.dense\."}


def train_and_score(
    config: BuildConfig, *, full: bool = False, unfreeze: Sequence[str] = ()
) -> dict[str, Any]:
    """Train on ``config``'s data in this process and score the eval data in torch (no export):
    PETL (adapters, ``config.skip_layers`` skipped) or, with ``full``, full fine-tuning of the fusion
    stack (every weight of the last layer list, at a tenth of the learning rate; no adapters).
    ``unfreeze`` (keys of :data:`FUSION_PARTS`) also trains those parts of every fusion-stack layer
    in full beside the adapters, at the adapters' learning rate: partial fine-tuning baselines."""
    from edge_vl.pipeline import load_adapted

    started = time.perf_counter()
    data = read_data(config)
    with tempfile.TemporaryDirectory() as work:
        prep = prepare(config, data, Path(work), print)
    family = prep.family
    train = config.train
    if full:
        torch.manual_seed(config.train.seed)
        with quiet_transformers():
            model = family.load(Path(config.model_dir), prep.labels)  # no adapters
        family.freeze(model)  # leaves the head (and the family's trainable extras) trainable
        for layer in family.layer_lists(model)[-1]:
            layer.requires_grad_(True)
        train = TrainConfig(
            **{**config.train.to_dict(), "lr": config.train.lr / 10}
        )  # full FT wants a smaller lr
    else:
        model = load_adapted(family, config, prep.labels)
        family.set_skipped(model, config.skip_layers or [])
        unfreeze_fusion(family, model, unfreeze)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not full:
        trainable = family.active_trainable_parameters(model)
    loop = TrainLoop(family, model, prep.train_data, train)
    summary = loop.run(progress=True)  # a loss line at every tenth of the run (logs show stalls)
    logits = predict_logits(family, model, prep.eval_data)
    acc = accuracy(logits, prep.eval_data.labels)
    total = sum(p.numel() for p in model.parameters())
    return {"eval_accuracy": acc, "trainable_parameters": trainable, "trainable_fraction": trainable / total,
            "steps": loop.step, "final_loss": summary.final_loss,
            "accuracy_by_answer": accuracy_by_answer(logits, prep.eval_data.labels, prep.labels),
            "accuracy_by_question": accuracy_by_question(
                logits, prep.eval_data.labels, prep.labels, [e.text for e in data.evals]),
            "seconds": round(time.perf_counter() - started)}  # fmt: skip


def unfreeze_fusion(family, model: torch.nn.Module, parts: Sequence[str]) -> list[str]:
    """Make ``parts`` (keys of :data:`FUSION_PARTS`) of every fusion-stack layer trainable;
    returns the names of the parameters it switched on."""
    if not parts:
        return []
    pattern = re.compile("|".join(FUSION_PARTS[part] for part in parts))
    switched = []
    for i, layer in enumerate(family.layer_lists(model)[-1]):
        for name, param in layer.named_parameters():
            if pattern.match(name) and not param.requires_grad:
                param.requires_grad_(True)
                switched.append(f"{i}.{name}")
    return switched


def accuracy_by_question(
    logits: torch.Tensor, labels: torch.Tensor, names: list[str], texts: list[str]
) -> dict[str, dict[str, float]]:
    """Accuracy per question template (the question with every answer word as ``<answer>``), next
    to the share of the template's most common answer: a template answered at that share is
    answered from the prior, without looking at the picture."""
    words = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b")
    right = (logits.argmax(-1) == labels).tolist()
    groups: dict[str, list[tuple[bool, int]]] = {}
    for text, ok, label in zip(texts, right, labels.tolist(), strict=True):
        groups.setdefault(words.sub("<answer>", text), []).append((ok, label))
    return {
        template: {
            "n": len(rows),
            "accuracy": round(sum(ok for ok, _ in rows) / len(rows), 4),
            "majority_share": round(Counter(label for _, label in rows).most_common(1)[0][1] / len(rows), 4),
        }
        for template, rows in sorted(groups.items())
    }


def accuracy_by_answer(logits: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Accuracy on the eval rows of each true answer (which questions a variant gets wrong)."""
    right = logits.argmax(-1) == labels
    return {
        name: round(float(right[labels == i].float().mean()), 4)
        for i, name in enumerate(names)
        if bool((labels == i).any())
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = QUICK_DEMO if args.quick else FULL_DEMO
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-vl-variants-"))
    work.mkdir(parents=True, exist_ok=True)
    train, evals = write_easy_vqa_manifests(
        work / "data", train_size=settings.train_size, eval_size=settings.eval_size
    )
    train_cfg = TrainConfig(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=args.lr, seed=args.seed
    )
    search_cfg = SearchConfig(epochs=settings.search_epochs, max_rows=settings.search_rows)

    def config(name: str, **plan) -> BuildConfig:
        return BuildConfig(model_dir=args.model, train_data=train, eval_data=evals, out=work / name,
                           train=train_cfg, search=search_cfg, progress=False, **plan)  # fmt: skip

    manifests: dict[str, Manifest] = {}
    partial: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)

    def record(name: str, m: Manifest | None, seconds: float) -> dict[str, Any]:
        assert m is not None  # a build returns no manifest only on ranks other than 0
        manifests[name] = m
        latency = m.metrics.latency_ms
        row = {"variant": name, "eval_accuracy": m.metrics.eval_accuracy,
                "retained_macs_fraction": m.cost.retained_fraction,
                "skipped": list(m.architecture.skipped),
                "latency_ms": latency.retained if latency else None,
                "trainable_parameters": m.training.trainable_parameters,
                "trainable_fraction": m.training.trainable_fraction,
                "seconds": round(seconds)}  # fmt: skip
        partial.append(row)  # a crash later on keeps what was measured
        write_text_atomic(args.out / "variants.partial.json", json.dumps(partial, indent=2) + "\n")
        return row

    n_train = len(read_examples(train, check_images=False))
    reused: dict[str, dict[str, Any]] = {}
    runs: dict[str, str] = {}  # date -> command of every run that measured a row taken over
    for path in args.reuse:  # the first file that measured a variant wins
        earlier_rows, earlier_runs = reusable_rows(path, settings, args)
        for name, row in earlier_rows.items():
            reused.setdefault(name, row)
        runs.update(earlier_runs)

    def planned(skipped: list[int], plan: dict[str, Any]) -> bool:
        """Whether a finished variant's skip set is what ``plan`` asks for."""
        if plan.get("skip_layers") is not None:
            return skipped == plan["skip_layers"]
        return plan.get("skip_count") is None or len(skipped) == plan["skip_count"]  # none: the default third

    def variant(name: str, **plan) -> dict[str, Any]:
        previous = reused.get(name)
        if previous is not None and planned(previous["skipped"], plan):
            print(f"[{name}] taken from the run of {previous['measured']} (skipped {previous['skipped']})",
                  flush=True)  # fmt: skip
            partial.append(previous)
            return previous
        finished = work / name
        if (finished / "manifest.json").is_file():  # built by an earlier run with this --work
            manifest = read_bundle(finished).manifest
            method = "given" if plan.get("skip_layers") is not None else "das"
            check_same_settings(manifest, config(name), n_train, method=method, what=str(finished))
            skipped = list(manifest.architecture.skipped)
            if not planned(skipped, plan):
                raise SystemExit(f"{finished} skips {skipped}, not what this run plans for {name} ({plan}): "
                                 "use another --work")  # fmt: skip
            print(f"[{name}] finished earlier in {finished}", flush=True)
            return record(name, manifest, manifest.training.seconds or 0.0)
        started = time.perf_counter()
        try:
            result = build(config(name, **plan), echo=lambda line: print(f"[{name}] {line}", flush=True))
        except Interrupted as e:  # its checkpoints stay in ``work``: a rerun there resumes them
            raise SystemExit(f"[{name}] {e.args[0].split(';')[0]}; to resume, rerun this command with "
                             f"--work {work}") from None  # fmt: skip
        return record(name, result.manifest, time.perf_counter() - started)

    if args.das_bundle is not None:  # the demo's bundle, already built with these settings
        manifest = read_bundle(args.das_bundle).manifest
        check_same_settings(manifest, config("das"), n_train)
        das = record("das", manifest, manifest.training.seconds or 0.0)
        das["measured"] = manifest.created  # its latency is from its own build, not this run
    else:  # the demo's bundle, with the precision measured too (``eval_accuracy`` is the torch one)
        das = variant("das", skip_count=args.k, text_buckets=settings.text_buckets, precision=args.precision)
    rows = [majority(train, evals), variant("petl-only", skip_layers=[]), das]
    n_layers = len(manifests["das"].architecture.layers)
    rng = random.Random(args.seed)
    das_k = len(das["skipped"])
    for r, skip_layers in enumerate(random_sets(rng, n_layers, das_k, args.random_sets, das["skipped"])):
        rows.append(variant(f"random-{r}", skip_layers=skip_layers))
    if not args.no_full_finetune:
        rows.insert(1, reused.get(FULL_FINETUNE) or full_finetune(config("full-ft")))
    randoms = [row["eval_accuracy"] for row in rows if row["variant"].startswith("random")]
    for k in sorted(set(args.sweep) - {0, das_k}):  # k = 0 is PETL-only, das_k is built above
        das_k_row = variant(f"das-k{k}", skip_count=k)
        rows.append(das_k_row)
        draws = sweep_random_sets(args.seed, n_layers, k, args.sweep_random, das_k_row["skipped"])
        for r, skip_layers in enumerate(draws):
            rows.append(variant(f"random-k{k}-{r}", skip_layers=skip_layers))
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = this_command()
    taken_over = {row["measured"] for row in rows if "measured" in row}
    report = {
        "date": date, "command": command,
        "machine": {**machine_info(), "python": platform.python_version()},
        "versions": package_versions(), "model": str(args.model), "settings": settings.__dict__,
        "train_examples": manifests["das"].metrics.train_examples,
        "eval_examples": manifests["das"].metrics.eval_examples,
        "k": das_k, "arms": n_layers, "rows": rows, "seed": args.seed, "lr": args.lr,
        "reused_from": [portable(str(path)) for path in args.reuse] or None,
        "runs": {**{d: c for d, c in runs.items() if d in taken_over}, date: command},
        "das_accuracy": das["eval_accuracy"],
        "petl_only_accuracy": rows[[r["variant"] for r in rows].index("petl-only")]["eval_accuracy"],
        "das_precision": manifests["das"].get("precision_choice"),
        "random_mean_accuracy": sum(randoms) / len(randoms) if randoms else None,
        "sweep": sweep_table(rows) if args.sweep else None,
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
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


def reusable_rows(
    path: Path, settings: Any, args: argparse.Namespace
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Rows of an earlier ``variants.json`` with the same settings, model and seed, by variant name
    (``--reuse``): a sweep over k need not rebuild the variants an earlier run measured. Also the
    runs (date -> command) that measured them, so the merged file names every row's command."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"--reuse {path}: cannot read it as a variants.json ({e})") from None
    # runs before "seed" was recorded used the default seed unless the command named one
    seed = earlier.get("seed", 0 if "--seed" not in earlier.get("command", "") else None)
    # files before "lr" was recorded were measured at 1e-3, the build's default then
    expected = {"settings": (json.loads(json.dumps(settings.__dict__)), earlier.get("settings")),
                "model": (str(args.model), earlier.get("model")), "seed": (args.seed, seed),
                "lr": (args.lr, earlier.get("lr", 1e-3))}  # fmt: skip
    wrong = [f"{k}: {got!r} (this run: {want!r})" for k, (want, got) in expected.items() if want != got]
    if wrong:
        raise SystemExit(f"--reuse {path} was measured with other settings: " + "; ".join(wrong))
    rows = [row for row in earlier["rows"] if row["variant"] != "das"]
    runs = {**earlier.get("runs", {}), earlier["date"]: earlier["command"]}  # files before "runs": own only
    return {row["variant"]: {**row, "measured": row.get("measured", earlier["date"])} for row in rows}, runs


def random_sets(
    rng: random.Random, n_layers: int, k: int, count: int, exclude: list[int] | None = None
) -> list[list[int]]:
    """``count`` distinct random k-sets of arms, never ``exclude`` (the DAS set, which a random
    baseline must not repeat); fewer if there are not that many."""
    sets: list[list[int]] = []
    available = math.comb(n_layers, k) - (exclude is not None)
    while len(sets) < min(count, available):
        candidate = sorted(rng.sample(range(n_layers), k))
        if candidate not in sets and candidate != exclude:
            sets.append(candidate)
    return sets


def sweep_random_sets(seed: int, n_layers: int, k: int, count: int, das_set: list[int]) -> list[list[int]]:
    """The random k-sets of the sweep: one generator per (seed, k), so they do not depend on which
    other k a run sweeps, and a sweep split over several runs (``--reuse``) draws the same sets."""
    return random_sets(random.Random(f"sweep-{seed}-{k}"), n_layers, k, count, exclude=das_set)


def sweep_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per k: accuracy, MACs and latency of the DAS set and the mean of the random sets (k = 0 is
    PETL-only, for both)."""

    def kind(row: dict[str, Any]) -> tuple[str, int] | None:
        name, k = row["variant"], len(row.get("skipped") or [])
        if name == "petl-only":
            return "both", 0
        if name == "das" or name.startswith("das-k"):
            return "das", k
        if name.startswith("random"):
            return "random", k
        return None

    table: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        if (found := kind(row)) is not None:
            which, k = found
            for side in ("das", "random") if which == "both" else (which,):
                table.setdefault(k, {"das": [], "random": []})[side].append(row)

    def mean(group: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in group if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    return [
        {"k": k, "das_set": sides["das"][0]["skipped"] if sides["das"] else None,
         **{f"{side}_{key}": mean(sides[side], key) for side in ("das", "random")
            for key in ("eval_accuracy", "retained_macs_fraction", "latency_ms")},
         "random_sets": len(sides["random"]) if k else 0}
        for k, sides in sorted(table.items())
    ]  # fmt: skip


def check_same_settings(
    manifest: Manifest,
    config: BuildConfig,
    n_train: int,
    *,
    method: str = "das",
    what: str = "--das-bundle",
) -> None:
    """Refuse a bundle (``--das-bundle``, or one an earlier run left in ``--work``) not built with
    the settings of the other variants."""
    training, plan = manifest.training, manifest.skip_plan
    expected = {
        "skip plan": (method, plan.method),
        "training rows": (n_train, manifest.metrics.train_examples),
        "epochs": (config.train.epochs, training.epochs),
        "batch size": (config.train.batch_size, training.batch_size),
        "seed": (config.train.seed, training.seed),
        "lr": (config.train.lr, training.lr),
        "loss": (config.train.loss, training.loss),
    }
    if method == "das":
        expected["search"] = (config.search.to_dict(), plan.search_config)
    wrong = [f"{k}: {got!r} (variants use {want!r})" for k, (want, got) in expected.items() if want != got]
    if wrong:
        raise SystemExit(f"{what} was built with other settings: " + "; ".join(wrong))


def label_indices(rows: Sequence[Any], names: Sequence[str], source: Path) -> list[int]:
    """Each row's label as an index into a bundle's answers ``names``; an error naming ``source``
    and the labels the bundle cannot answer."""
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({r.label for r in rows} - index.keys())
    if unknown:
        raise SystemExit(f"{source}: labels {unknown} are not among the bundle's answers")
    return [index[r.label] for r in rows]


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
        measured = f" (measured {row['measured']})" if row.get("measured") else ""
        lines.append(
            f"| {row['variant']}{measured} | {row.get('skipped') or '–'} | {row['eval_accuracy']:.4f} | "
            f"{row['retained_macs_fraction']:.1%} | {_num(lat, 2)} | "
            f"{'–' if trainable is None else f'{trainable:,}'} |"
        )
    random_mean = report["random_mean_accuracy"]
    lines += [
        "",
        f"DAS-{report['k']}: {report['das_accuracy']:.4f}; PETL-only: {report['petl_only_accuracy']:.4f}; "
        f"mean of the random {report['k']}-sets: {'–' if random_mean is None else f'{random_mean:.4f}'}.",
        "",
        "Latency: measured by each build on its own, at its own time; rows built while other work "
        "shared the machine (a sweep split over parallel runs) read high, so compare latencies across "
        "rows only in an interleaved run (RESULTS.md).",
    ]
    if report.get("sweep"):
        lines += [
            "",
            "Accuracy and MACs by k (DAS: the searched set; random: mean of the random sets; k = 0 is "
            "PETL-only). Latency by k, every set timed in one interleaved run, is part k of "
            "`examples/benchmarks/RESULTS.md` (`results.py`).",
            "",
            "| k | DAS set | DAS accuracy | random accuracy | MACs vs full model (DAS) |",
            "|---|---|---|---|---|",
        ]
        for row in report["sweep"]:
            lines.append(
                f"| {row['k']} | {row['das_set'] or '–'} | {_num(row['das_eval_accuracy'])} | "
                f"{_num(row['random_eval_accuracy'])} | {row['das_retained_macs_fraction']:.1%} |"
            )
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


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _k_list(text: str) -> list[int]:
    """``"1-6"`` or ``"1,2,3"`` → the list of k."""
    try:
        if "-" in text:
            low, high = (int(x) for x in text.split("-", 1))
            return list(range(low, high + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected k values like 1-6 or 1,2,3, got {text!r}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="edge-vl-mini", help="checkpoint directory or shipped model name")
    p.add_argument("--k", type=int, default=None, help="arms to skip [default: a third]")
    p.add_argument("--random-sets", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3,
                   help="adapter learning rate (full fine-tuning: a tenth) [default: 1e-3, that of the "
                   "committed results; the build's own default is the family's]")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="the --quick demo settings (smoke run)")
    p.add_argument("--no-full-finetune", action="store_true")
    p.add_argument("--precision", default="auto", help="precision of the DAS bundle (fp32|fp16|int8|auto)")
    p.add_argument("--keep", type=Path, default=None, help="move the bundles and manifests here")
    p.add_argument("--das-bundle", type=Path, default=None,
                   help="take the DAS row from this bundle of `edge-vl build --demo` (same settings, "
                        "checked) instead of building it again")  # fmt: skip
    p.add_argument("--sweep", type=_k_list, default=[],
                   help="also build a DAS set and random sets for each of these k (e.g. 1-6): "
                        "accuracy vs MACs vs latency by k")  # fmt: skip
    p.add_argument("--sweep-random", type=int, default=1, help="random sets per swept k")
    p.add_argument("--reuse", type=Path, action="append", default=[],
                   help="take the rows an earlier variants.json measured with the same settings "
                        "(same variant name and skip set) instead of building them again; "
                        "repeat it to merge runs")  # fmt: skip
    p.add_argument("--work", type=Path, default=None,
                   help="keep the builds here: a rerun with the same --work resumes an interrupted build "
                        "and takes the finished ones [default: a temporary directory, removed]")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "edge-vl-mini")
    args = p.parse_args()
    report = run(args)
    write(report, args.out)
    print(f"wrote {args.out / 'variants.md'}")
    print(json.dumps({k: report[k] for k in ("das_accuracy", "petl_only_accuracy", "random_mean_accuracy")}))


if __name__ == "__main__":
    main()
