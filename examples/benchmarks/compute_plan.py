"""The compute plan on a task (the demo by default): a build that chooses input size and skip set
under one budget, timed against OpenVINO FP32 of the full model at the checkpoint's input size
(issue #33, acceptances 1 and 2). One build per seed, resumable; finished seeds are kept in ``--out``.

    python -m examples.benchmarks.compute_plan --work <scratch>/plan --seeds 0,1,2 \\
        --out examples/benchmarks/results/compute_plan/demo-flops050.json

Compare the accuracies with the PETL-only builds of ``seed_spread --sets none`` (same seeds and
``--task``). ``--measure-only`` times the finished bundles again (e.g. once nothing else runs).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from examples.benchmarks.processes import run_build
from examples.benchmarks.recorded import portable, write_results
from examples.benchmarks.tasks import TASKS, build_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the builds (resumable)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file (finished seeds are kept)")
    parser.add_argument("--seeds", default="0", help="comma-separated fine-tune seeds")
    parser.add_argument("--image-sizes", default="64,96,128", help="the sizes the plan chooses among")
    parser.add_argument("--flops-budget", default="0.5", help="fraction of the full model's MACs")
    parser.add_argument("--runs", type=int, default=30, help="interleaved rounds of the latency comparison")
    parser.add_argument("--task", choices=TASKS, default="easy-vqa", help="easy-vqa: the demo")
    parser.add_argument(
        "--measure-only", action="store_true", help="time the finished seeds' bundles again; build nothing"
    )
    args = parser.parse_args()
    found = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": [], "task": args.task}
    if found.get("task", "easy-vqa") != args.task:
        parser.error(f"--out {args.out} holds runs of {found.get('task', 'easy-vqa')}, not {args.task}")
    if args.measure_only:
        bundles = [args.work / f"plan-seed{run['seed']}" / "bundle" for run in found["runs"]]
        if missing := [str(b) for b in bundles if not (b / "manifest.json").is_file()]:
            parser.error(f"--measure-only: no bundle in {', '.join(missing)}; give the builds' --work")
        for run, bundle in zip(found["runs"], bundles, strict=True):
            print(f"seed {run['seed']}: timing again …", flush=True)
            run.update(measured(bundle, args.runs))
            write_results(args.out, found)
    done = {r["seed"] for r in found["runs"]}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    seeds = [] if args.measure_only else [int(s) for s in args.seeds.split(",")]
    base = build_command(args.task, args.work) if set(seeds) - done else []  # writes the task's rows once
    for seed in (s for s in seeds if s not in done):
        command = [*base, "--seed", str(seed)]
        command += ["--image-sizes", args.image_sizes, "--flops-budget", args.flops_budget]
        print(f"seed {seed}: building (or resuming) …", flush=True)
        row = run_build(f"plan-seed{seed}", args.work, command, env)
        found["runs"].append(
            {"seed": seed, **row, **measured(args.work / f"plan-seed{seed}" / "bundle", args.runs)}
        )
        write_results(args.out, found)
    print("| seed | size | skipped | accuracy | speed-up over the full model |\n|---|---|---|---|---|")
    for r in found["runs"]:
        speedup = r["compare"]["speedup_of_bundle"]["openvino_full"]
        size = f"{r['plan']['chosen']} px" if r["plan"] else "one size"  # a build without a size plan
        cells = [str(r["seed"]), size, str(r["skipped"]), f"{r['eval_accuracy']:.4f}"]
        print("| " + " | ".join([*cells, f"{speedup:.2f}×"]) + " |")


def measured(bundle: Path, runs: int) -> dict:
    """The plan the build recorded, and ``bench --compare torch`` of its bundle (2 threads)."""
    from edge_vl.bundle import read_bundle
    from edge_vl.schema import to_json
    from edge_vl.training.compare import compare_with_torch

    plan = read_bundle(bundle).manifest.skip_plan.sizes
    compare = compare_with_torch(bundle, runs=runs, threads=2)
    compare["bundle"] = portable(str(bundle))  # no machine's folders in results
    return {"plan": to_json(plan) if plan else None, "compare": compare}


if __name__ == "__main__":
    main()
