"""The fine-tune's seed spread on the demo: one skip set fine-tuned with several seeds.

Each run is ``edge-vl build --demo --skip-layers SET --seed S --lr LR`` (no search: only the
fine-tune's randomness — batch order, dropout, adapter initialisation — changes), two runs at a time
with one thread each, in fresh folders under ``--work`` (finished runs are read back, so a cut-off
sweep resumes). The set ``das`` runs the whole demo instead (no ``--skip-layers``): the seed then
changes the search too, so its runs give the spread of what a user's ``edge-vl build --demo`` gets.
Writes every run and the mean ± std per set to ``--out``. Any DAS-vs-random difference smaller than
this spread is not a finding.

    python examples/benchmarks/seed_spread.py --work /tmp/spread --sets 3,6,8,11 --seeds 1,2 \\
        --out examples/benchmarks/results/seed_spread/seed_spread.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from processes import run_build
from variants import portable


def run_key(run: dict) -> tuple[str, int, float]:
    """(set, seed, lr) of a run: the set is ``das`` when the search chose it, else the skip set as a
    list; runs recorded without "lr" were built at 1e-3, the default then."""
    return "das" if run.get("set") == "das" else str(run["skipped"]), run["seed"], run.get("lr", 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the builds (resumable)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--sets", nargs="+", required=True, metavar="I,J,...", help="skip sets, or das")
    parser.add_argument("--seeds", default="0,1,2", help="fine-tune seeds, comma-separated")
    parser.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="an earlier seed_spread.json whose runs are kept (the same set, seed and lr is not rebuilt)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="adapter learning rate (committed runs: 1e-3)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    build = [sys.executable, "-m", "edge_vl", "build", "--demo"]
    reused = {run_key(r): r for f in args.reuse for r in json.loads(f.read_text())["runs"]}
    jobs = []
    for spec in args.sets:
        key = spec if spec == "das" else str([int(i) for i in spec.split(",")])
        for seed in seeds:
            if (key, seed, args.lr) not in reused:
                command = [*build, "--seed", str(seed), "--lr", f"{args.lr:g}"]
                if spec != "das":
                    command += ["--skip-layers", spec]
                jobs.append((seed, spec, f"skip{spec.replace(',', '-')}-seed{seed}", command))
    args.work.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        done = pool.map(
            lambda job: {**run_build(job[2], args.work, job[3], env), "seed": job[0], "set": job[1]}, jobs
        )
        runs = [*reused.values(), *done]
    by_set: dict[str, list[float]] = {}
    for r in runs:
        key, _, lr = run_key(r)
        by_set.setdefault(f"{key} at lr {lr:g}", []).append(r["eval_accuracy"])
    summary = {
        key: {"n": len(v), "mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else None}
        for key, v in by_set.items()
    }
    report = {
        "command": "python "
        + " ".join([portable(str(Path(sys.argv[0]).resolve())), *map(portable, sys.argv[1:])]),
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lr": args.lr,
        "runs": [{**r, "command": r["command"].replace(sys.executable, "python")} for r in runs],
        "by_set": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for key, s in summary.items():
        std = f" ± {s['std']:.4f}" if s["std"] is not None else ""
        print(f"{key}: {s['mean']:.4f}{std} over {s['n']} seeds")


if __name__ == "__main__":
    main()
