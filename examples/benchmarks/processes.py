"""The demo build with one process against several (torch.distributed, gloo on the CPU).

Runs ``edge-vl build --demo`` as 1 process × ``--threads`` threads and as ``--procs`` processes ×
1 thread (``torchrun``), one after the other in fresh folders under ``--work``, and optionally the
same 1-process build of an older commit (``--baseline-rev``, checked out with ``git worktree``) to
see what a change costs CPU users; ``--fixed-skip`` adds a multi-process build with a given skip
set (the fine-tune without the search). Each run's wall time, the build's own time (manifest
``training.seconds``), skip set and accuracy go to ``--out`` (JSON) and a Markdown table is
printed. Runs already finished in ``--work`` are read back, so an interrupted sweep resumes.

    python -m examples.benchmarks.processes --work /tmp/procs --baseline-rev 3046dea \\
        --fixed-skip 3,6,8,11 --out examples/benchmarks/results/processes/processes.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from edge_vl.bundle import read_bundle
from edge_vl.fileio import write_text_atomic
from edge_vl.schema import to_json
from examples.benchmarks.recorded import REPO, portable, this_command


def run_build(name: str, work: Path, command: list[str], env: dict[str, str]) -> dict:
    """One demo build in ``work/name`` (its own ``edge-vl-demo/``); the result row."""
    folder = work / name
    bundle = folder / "bundle"
    result_file = folder / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    # an unfinished build keeps its work directory: the same command resumes it
    resumed = (folder / f".{bundle.name}.work").is_dir() or bundle.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    commit = revision(env.get("PYTHONPATH") or REPO)
    started = time.perf_counter()
    if not bundle.is_dir():  # a run killed after its bundle was written only lacks the result
        with (folder / "build.log").open("a") as log:
            subprocess.run(
                [*command, "--out", str(bundle)],
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
    wall = time.perf_counter() - started
    manifest = read_bundle(bundle).manifest
    plan, training = manifest.skip_plan, manifest.training
    sureness = plan.search.uncertainty if plan.search else None
    row = {
        "run": name,
        "commit": commit,
        # as anyone reruns it: "python", no machine's folders
        "command": " ".join(["python" if a == sys.executable else portable(a) for a in command]),
        # a resumed run's wall time is only its last part
        "wall_seconds": None if resumed else round(wall, 1),
        "resumed": resumed,  # then ``commit`` is the last part's: earlier parts may be older
        "train_seconds": training.seconds,
        "skipped": list(plan.skipped),
        "eval_accuracy": manifest.metrics.eval_accuracy,
        "eval_examples": manifest.metrics.eval_examples,
        "lr": training.lr,
        "epochs": training.epochs,
        "final_loss": training.final_loss,  # the fine-tune's last training loss
        # only when the run asked for one: runs at the checkpoint's size keep their setting's key
        **({"image_size": manifest.preprocessing.image.size[0]} if "--image-size" in command else {}),
        # what ranked the layers when a search chose them (None: the skip set was given)
        "search_estimator": (plan.search_config or {}).get("estimator"),
        "search_seconds": plan.search_seconds,  # of train_seconds
        # das, or das-undecided when the search's data did not separate its pick (issue #37)
        "method": plan.method,
        "search_uncertainty": to_json(sureness) if sureness else None,
        "machine": machine(),  # wall times of runs on different machines do not compare
    }
    write_text_atomic(result_file, json.dumps(row, indent=2))  # a killed run leaves none
    return row


def machine() -> str:
    """This machine's CPU, cores and vector ISA, as a run records it."""
    from edge_vl.runtime.cpu import machine_info  # light: no torch

    m = machine_info()
    isa = " ".join(flag for flag, present in m["flags"].items() if present)
    return f"{m['cpu']}, {m['cores']} cores, {isa}"


def revision(tree: str | Path) -> str:
    """The commit a build runs (a dirty tree gets a ``+``); for a snapshot that is no git checkout
    (``git archive``), the commit its ``COMMIT`` file names, else ``""``."""
    git = ["git", "-C", str(tree)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    snapshot = Path(tree) / "COMMIT"
    if head.returncode != 0 and snapshot.is_file():
        return snapshot.read_text().strip()[:7] + " (snapshot)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "edge_vl", "converters"], capture_output=True, text=True
    )
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the builds (resumable)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--procs", type=int, default=2, help="processes of the distributed run")
    parser.add_argument("--threads", type=int, default=2, help="threads of the 1-process run")
    parser.add_argument(
        "--fixed-skip",
        metavar="I,J,...",
        help="also a multi-process build with this skip set and no search (the fine-tune alone)",
    )
    parser.add_argument("--baseline-rev", help="also build the demo with this commit's edge-vl (1 process)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # progress lines reach build.log as they happen
    build = [sys.executable, "-m", "edge_vl", "build", "--demo"]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={args.procs}",
    ]
    plans = []
    if args.baseline_rev:
        tree = args.work / f"tree-{args.baseline_rev}"
        if not tree.exists():
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.baseline_rev],
                check=True,
            )
        plans.append(
            (
                f"baseline {args.baseline_rev}, 1×{args.threads}",
                build,
                {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)},
            )
        )
    plans.append((f"1 process × {args.threads} threads", build, {"OMP_NUM_THREADS": str(args.threads)}))
    plans.append(
        (
            f"{args.procs} processes × 1 thread",
            [*torchrun, "-m", "edge_vl", "build", "--demo"],
            {"OMP_NUM_THREADS": "1"},
        )
    )
    if args.fixed_skip:
        fixed = [*torchrun, "-m", "edge_vl", "build", "--demo", "--skip-layers", args.fixed_skip]
        name = f"{args.procs} processes × 1 thread, skip {args.fixed_skip}"
        plans.append((name, fixed, {"OMP_NUM_THREADS": "1"}))
    rows = []
    for name, command, extra in plans:
        print(f"{name}: building …", flush=True)
        folder = name.replace(" ", "").replace("×", "x").replace(",", "-")
        rows.append(run_build(folder, args.work, command, {**env, **extra}) | {"run": name})
        last = rows[-1]
        print(f"  {last['wall_seconds']} s, skipped {last['skipped']}, accuracy {last['eval_accuracy']:.4f}")
    report = {
        "command": this_command(),
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print("| run | wall s | build s | skipped | accuracy |\n|---|---|---|---|---|")
    for r in rows:
        cells = [r["run"], f"{r['wall_seconds']:.0f}", f"{r['train_seconds']:.0f}", str(r["skipped"])]
        print("| " + " | ".join([*cells, f"{r['eval_accuracy']:.4f}"]) + " |")


if __name__ == "__main__":
    main()
