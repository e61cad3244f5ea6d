"""The fine-tune's seed spread on the demo: one skip set fine-tuned with several seeds.

Each run is ``edge-vl build --demo --skip-layers SET --seed S --lr LR`` (no search: only the
fine-tune's randomness — batch order, dropout, adapter initialisation — changes), two runs at a time
with one thread each, in fresh folders under ``--work`` (finished runs are read back, so a cut-off
sweep resumes). The set ``das`` runs the whole demo instead (no ``--skip-layers``): the seed then
changes the search too, so its runs give the spread of what a user's ``edge-vl build --demo`` gets;
``das:K`` does the same with ``--skip-count K``. ``none`` fine-tunes adapters only (no arm skipped).
``--random K:N`` adds N random K-sets of the demo's 12 arms, drawn by a generator seeded with K, so
asking for more sets later keeps the first ones (the baseline a search must beat, issue #17).
``--task digits`` runs the same on ``tasks.py``'s second task (``edge-vl build --data … --eval-data
…`` with edge-vl-mini and the build's default budget) instead of the demo. Writes every run and the
mean ± std per set to ``--out``, rewritten as each run finishes (a sweep whose ``--work`` folder is
lost goes on with ``--reuse OUT``). Any DAS-vs-random difference smaller than this spread is not a
finding.

    python -m examples.benchmarks.seed_spread --work /tmp/spread --sets 3,6,8,11 --seeds 1,2 \\
        --out examples/benchmarks/results/seed_spread/seed_spread.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy

from edge_vl.choices import ESTIMATORS
from edge_vl.config import SearchConfig, TrainConfig
from edge_vl.demo import FULL_DEMO
from edge_vl.fileio import write_text_atomic
from examples.benchmarks.processes import run_build
from examples.benchmarks.recorded import this_command
from examples.benchmarks.tasks import TASKS, build_command

DEMO_ARMS = 12


def random_sets(k: int, n: int) -> list[list[int]]:
    """The first ``n`` distinct random ``k``-sets of the demo's arms (generator seeded with ``k``)."""
    rng, sets = random.Random(k), []
    while len(sets) < n:
        drawn = sorted(rng.sample(range(DEMO_ARMS), k))
        if drawn not in sets:
            sets.append(drawn)
    return sets


def set_key(spec: str) -> str:
    """The key of a requested set: ``das``/``das:K`` as given, else the skip set as a list."""
    if spec.startswith("das"):
        return spec
    return str([] if spec == "none" else [int(i) for i in spec.split(",")])


#: search seeds whose picks a verdict against chance needs (issue #17)
MIN_PICKS = 3
#: the fine-tune length of runs that did not record theirs (every such run was the demo at 1.7)
UNRECORDED_EPOCHS = 1.7


def run_setting(run: dict) -> str:
    """The fine-tune settings a run's accuracy depends on besides set and seed: runs recorded without
    "lr" were built at 1e-3, without "epochs" with ``UNRECORDED_EPOCHS``."""
    setting = f"lr {run.get('lr', 1e-3):g}, {run.get('epochs', UNRECORDED_EPOCHS):g} epochs"
    return setting + (f", {run['image_size']} px" if run.get("image_size") else "")


def das_key(spec: str, estimator: str) -> str:
    """The set key of a ``das``/``das:K`` run: ``+ESTIMATOR`` when the search did not rank by the
    paper's gates."""
    return spec if estimator == "gates" else f"{spec}+{estimator}"


def run_key(run: dict) -> tuple[str, str, int, str]:
    """(task, set, seed, setting) of a run: ``das``/``das:K`` when the search chose the set (with
    ``+ESTIMATOR`` when the search ranked layers other than by the paper's gates), else the skip set
    as a list; runs recorded without "task" are the demo's."""
    spec = run.get("set", "")
    estimator = run.get("search_estimator") or "gates"
    key = das_key(spec, estimator) if spec.startswith("das") else str(run["skipped"])
    return run.get("task", "easy-vqa"), key, run["seed"], run_setting(run)


def search_against_chance(runs: list[dict]) -> list[dict]:
    """For each (task, k, setting) with search picks and random sets: issue #17's comparison, one
    row per search variant (``das`` with the gates, ``das+prior``, …).

    Picks: the sets ``das``/``das:K`` runs chose (one per search seed). Random sets: ``random:K``
    runs, each set's accuracy averaged over its seeds. The fine-tune spread is the widest std over
    seeds of any random or fixed set at that k and setting (none: not measured)."""
    groups: dict[tuple[str, int, str], dict[str, Any]] = {}
    for r in runs:
        task, _, _, setting = run_key(r)
        empty: dict[str, Any] = {"picks": {}, "random": {}, "fixed": {}, "any": {}}
        group = groups.setdefault((task, len(r["skipped"]), setting), empty)
        group["any"].setdefault(str(r["skipped"]), []).append(r["eval_accuracy"])
        if r.get("set", "").startswith("das"):
            search = r.get("search_estimator") or "gates"
            group["picks"].setdefault(search, []).append(r["eval_accuracy"])
        else:
            label = r.get("set", "")
            kind = "random" if label.startswith("random:") else "fixed"
            group[kind].setdefault(str(r["skipped"]), []).append(r["eval_accuracy"])
    rows = []
    for (task, k, setting), g in sorted(groups.items()):
        if not g["random"]:
            continue
        random_means = sorted(statistics.fmean(v) for v in g["random"].values())
        random_mean = statistics.fmean(random_means)
        seeded = [v for kind in ("random", "fixed") for v in g[kind].values() if len(v) > 1]
        spread = max((statistics.stdev(v) for v in seeded), default=None)
        p80 = float(numpy.percentile(random_means, 80))
        best_set = max(statistics.fmean(v) for v in g["any"].values())
        for search, picks in sorted(g["picks"].items()):
            picks_mean = statistics.fmean(picks)
            margin = picks_mean - random_mean
            rows.append({
                "task": task, "k": k, "setting": setting, "search": search, "picks": picks,
                "picks_mean": picks_mean, "random_sets": len(random_means), "random_mean": random_mean,
                "random_p80": p80,
                "percentile_rank": 100 * sum(a < picks_mean for a in random_means) / len(random_means),
                "finetune_spread": spread, "margin": margin,
                # the margin of the best set measured at this k (random, fixed or picked, over its
                # runs): what picking it every time would have scored, the most these sets can show
                "best_set_margin": best_set - random_mean,
                # issue #17's bar: the picks of at least MIN_PICKS search seeds
                "beats_p80_and_spread": bool(
                    len(picks) >= MIN_PICKS and picks_mean >= p80 and spread is not None and margin > spread
                ),
            })  # fmt: skip
    return rows


def summarise(accuracies: list[float]) -> dict[str, Any]:
    """n, mean and std (None for one run) of a set's accuracies over seeds."""
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else None
    return {"n": len(accuracies), "mean": statistics.fmean(accuracies), "std": std}


def save_report(out: Path, runs: list[dict], lr: float) -> dict[str, Any]:
    """Write the runs, the mean ± std per set and the search-vs-chance comparison to ``out``."""
    by_set: dict[str, list[float]] = {}
    for r in runs:
        task, key, _, setting = run_key(r)
        name = f"{key} at {setting}" if task == "easy-vqa" else f"{task}: {key} at {setting}"
        by_set.setdefault(name, []).append(r["eval_accuracy"])
    report = {
        "command": this_command(),
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lr": lr,
        "runs": runs,
        "by_set": {key: summarise(v) for key, v in by_set.items()},
        "search_against_chance": search_against_chance(runs),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the builds (resumable)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument(
        "--sets", nargs="*", default=[], metavar="I,J,...", help="skip sets, none (no skip), das or das:K"
    )
    parser.add_argument(
        "--random",
        action="append",
        default=[],
        metavar="K:N[@F]",
        help="N random K-sets (a fixed draw); @F: only the draw's sets F to N (to split it over two jobs)",
    )
    parser.add_argument("--seeds", default="0,1,2", help="fine-tune seeds, comma-separated")
    parser.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="an earlier seed_spread.json whose runs are kept (a set, seed and setting in it is not rebuilt)",
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="adapter learning rate (the demo's default)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--task", choices=TASKS, default="easy-vqa", help="easy-vqa: the demo")
    parser.add_argument("--epochs", type=float, help="fine-tune epochs (default: the build's)")
    parser.add_argument("--image-size", type=int, help="input size in pixels (default: the checkpoint's)")
    parser.add_argument(
        "--search-estimator", choices=ESTIMATORS, help="what ranks layers in das runs (default: the build's)"
    )
    args = parser.parse_args()
    for path in args.reuse:
        if not path.is_file():
            parser.error(f"--reuse {path}: no such file")
    seeds = [int(s) for s in args.seeds.split(",")]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    build = build_command(args.task, args.work)
    default_epochs = FULL_DEMO.epochs if args.task == "easy-vqa" else TrainConfig().epochs
    setting = run_setting(
        {"lr": args.lr, "epochs": args.epochs or default_epochs, "image_size": args.image_size}
    )
    estimator = args.search_estimator or SearchConfig().estimator
    reused = {run_key(r): r for f in args.reuse for r in json.loads(f.read_text())["runs"]}
    specs = {spec: spec for spec in args.sets}  # skip set → the label its runs record as "set"
    for draw in args.random:
        count, _, first = draw.partition("@")  # K:N@F: only sets F.. of the draw (split over jobs)
        k, n = (int(v) for v in count.split(":"))
        drawn = random_sets(k, n)[int(first or 1) - 1 :]
        specs.update({",".join(map(str, s)): f"random:{k}" for s in drawn})
    jobs = []
    for spec, label in specs.items():
        for seed in seeds:
            key = set_key(spec)
            key = das_key(key, estimator) if key.startswith("das") else key
            if (args.task, key, seed, setting) in reused:
                if label.startswith("random:"):  # a drawn set measured before under its own name
                    reused[args.task, key, seed, setting]["set"] = label
            else:
                command = [*build, "--seed", str(seed), "--lr", f"{args.lr:g}"]
                command += ["--epochs", f"{args.epochs:g}"] if args.epochs else []
                command += ["--image-size", str(args.image_size)] if args.image_size else []
                if spec.startswith("das"):
                    command += ["--search-estimator", args.search_estimator] if args.search_estimator else []
                    command += ["--skip-count", spec.removeprefix("das:")] if ":" in spec else []
                else:
                    command += ["--skip-layers", "" if spec == "none" else spec]
                name = f"skip{spec.replace(',', '-').replace(':', '')}-seed{seed}"
                # runs of other settings get their own folders (a finished folder is read back)
                name += f"-{args.epochs:g}ep" if args.epochs else ""
                name += f"-{args.image_size}px" if args.image_size else ""
                searched = spec.startswith("das") and args.search_estimator
                name += f"-{args.search_estimator}" if searched else ""
                name = name if args.task == "easy-vqa" else f"{args.task}-{name}"
                jobs.append((seed, label, name, command))
    args.work.mkdir(parents=True, exist_ok=True)
    runs, finished = list(reused.values()), {}
    # the file is rewritten after every finished run: a sweep cut off with its --work folder lost
    # (another machine, another session) keeps what it measured, and --reuse carries it on
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = {pool.submit(run_build, name, args.work, command, env): i
                   for i, (_, _, name, command) in enumerate(jobs)}  # fmt: skip
        failed = []
        for future in as_completed(futures):
            seed, label, name, _ = jobs[futures[future]]
            try:
                row = future.result()
            except Exception as error:  # a failed build must not lose the others' results
                failed.append(name)
                print(f"{name} failed ({error}); its log: {args.work / name / 'build.log'}", flush=True)
                continue
            finished[futures[future]] = {**row, "seed": seed, "set": label, "task": args.task}
            runs = [*reused.values(), *(finished[i] for i in sorted(finished))]
            save_report(args.out, runs, args.lr)
    report = save_report(args.out, runs, args.lr)
    if failed:
        raise SystemExit(f"{len(failed)} build(s) failed: {', '.join(failed)}; {args.out} has the rest")
    summary = report["by_set"]
    for key, s in summary.items():
        std = f" ± {s['std']:.4f}" if s["std"] is not None else ""
        print(f"{key}: {s['mean']:.4f}{std} over {s['n']} seeds")
    for c in report["search_against_chance"]:
        head = f"{c['task']} k={c['k']} {c['setting']}, search {c['search']}"
        print(f"{head}: picks {c['picks_mean']:.4f}, random {c['random_mean']:.4f}, "
              f"percentile rank {c['percentile_rank']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
