"""How well edge-vl-mini checkpoints transfer: PETL-only (adapters, no layer skipped) and full
fine-tuning of the fusion stack, on easy-vqa and on a second task (:mod:`tasks`), same budget.

    python examples/benchmarks/transfer.py --model new=edge-vl-mini --model old=git:676fd64 \\
        --model random=random --tasks easy-vqa digits --modes petl full

``NAME=SPEC`` names a checkpoint: a directory, a shipped model name, ``git:REV`` (the shipped
checkpoint as committed at REV, extracted with git), or ``random`` (edge-vl-mini's pretrained
encoders with a freshly initialised fusion stack: what pretraining is worth). Every row is trained
and scored in this process (torch, no export), with the demo's settings on easy-vqa (all 38,575
training and 9,673 test questions) and :data:`BUDGETS` on the others. Rows are written to
``--out/transfer.json`` as they finish; a rerun takes the rows already there with the same
settings, so a long run can be split (or run as two processes with different ``--model``, one
thread each, into different ``--out`` and merged with ``--reuse``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from edge_vl.build import BuildConfig, package_versions, resolve_model_dir
from edge_vl.demo import FULL_DEMO
from edge_vl.fileio import sha256_file, write_text_atomic
from edge_vl.finetune import TrainConfig
from edge_vl.runtime.cpu import cpu_name

sys.path.insert(0, str(Path(__file__).parent))
from tasks import TASKS, write_task
from variants import train_and_score

REPO = Path(__file__).resolve().parents[2]
#: training settings per task: easy-vqa as the demo; digits: 3 epochs of its 6,735 questions
BUDGETS = {
    "easy-vqa": TrainConfig(epochs=FULL_DEMO.epochs, batch_size=FULL_DEMO.batch_size),
    "digits": TrainConfig(epochs=3.0, batch_size=32),
}
#: ``--quick``: a proxy to compare checkpoints in minutes (easy-vqa: 8,000 training and 2,000 test
#: questions, one epoch); not the table's figures
QUICK = {
    "easy-vqa": (8_000, 2_000, TrainConfig(epochs=1.0, batch_size=32)),
    "digits": (None, None, BUDGETS["digits"]),
}


def checkpoint(spec: str, work: Path) -> Path | str:
    """A directory (or shipped name) for ``spec`` (see the module docstring)."""
    if spec.startswith("git:"):
        rev, out = spec[4:], work / f"git-{spec[4:]}"
        if not (out / "config.json").is_file():
            out.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "model.safetensors"):
                path = f"{rev}:edge_vl/mini/checkpoint/{name}"
                blob = subprocess.run(
                    ["git", "-C", str(REPO), "show", path], check=True, capture_output=True
                ).stdout
                (out / name).write_bytes(blob)
        return out
    if spec == "random":
        out = work / "random-fusion"
        if not (out / "config.json").is_file():
            from edge_vl.mini import EdgeVLMiniConfig, EdgeVLMiniModel

            config = json.loads((resolve_model_dir("edge-vl-mini") / "config.json").read_text())
            for key in ("architectures", "model_type", "transformers_version", "dtype"):
                config.pop(key, None)
            torch.manual_seed(0)
            EdgeVLMiniModel(EdgeVLMiniConfig(**config)).save_trained_parts(out)
        return out
    return spec


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-vl-transfer-"))
    results_file = args.out / "transfer.json"
    earlier = json.loads(results_file.read_text()) if results_file.is_file() else {"rows": []}
    rows = {
        (r["model"], r["task"], r["mode"]): r
        for path in args.reuse
        for r in json.loads(path.read_text())["rows"]
    }
    rows.update({(r["model"], r["task"], r["mode"]): r for r in earlier["rows"]})
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = " ".join(["python examples/benchmarks/transfer.py", *sys.argv[1:]])
    report = {
        "command": command, "date": date, "machine": cpu_name(), "threads": torch.get_num_threads(),
        "versions": package_versions(), "budgets": {t: asdict(c) for t, c in BUDGETS.items()},
    }  # fmt: skip
    for name, spec in args.model:
        model_dir = checkpoint(spec, work / "checkpoints")
        digest = sha256_file(resolve_model_dir(model_dir) / "model.safetensors")
        for task in args.tasks:
            train_size, eval_size, budget = QUICK[task] if args.quick else (None, None, BUDGETS[task])
            data_dir = work / "data" / (f"{task}-quick" if args.quick else task)
            train, evals = write_task(task, data_dir, train_size=train_size, eval_size=eval_size)
            for mode in args.modes:
                key = (name, task, mode)
                same = {"checkpoint_sha256": digest, "budget": asdict(budget), "quick": args.quick}
                if key in rows and all(rows[key].get(k) == v for k, v in same.items()):
                    print(f"[{name} {task} {mode}] taken from {rows[key]['date']}", flush=True)
                    continue
                config = BuildConfig(
                    model_dir=model_dir, train_data=train, eval_data=evals, out=work / "unused",
                    train=budget, skip_layers=[], progress=False,
                )  # fmt: skip
                result = train_and_score(config, full=mode == "full")
                rows[key] = {"model": name, "spec": spec, "task": task, "mode": mode, "date": date, **same,
                             **result}  # fmt: skip
                print(f"[{name} {task} {mode}] accuracy {result['eval_accuracy']:.4f}", flush=True)
                args.out.mkdir(parents=True, exist_ok=True)
                write(
                    args.out,
                    {
                        **report,
                        "rows": sorted(rows.values(), key=lambda r: (r["task"], r["model"], r["mode"])),
                    },
                )
    return {**report, "rows": sorted(rows.values(), key=lambda r: (r["task"], r["model"], r["mode"]))}


def write(out: Path, report: dict[str, Any]) -> None:
    write_text_atomic(out / "transfer.json", json.dumps(report, indent=2) + "\n")
    lines = [
        "# Transfer of edge-vl-mini checkpoints",
        "",
        f"Generated by `{report['command']}` ({report['date']}, {report['machine']}). Each row trains "
        "in torch with the same budget per task and scores every test question; PETL: adapters, no "
        "layer skipped; full: every fusion-stack weight, adapters none.",
        "",
        "| task | model | mode | accuracy | trainable parameters | steps | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        trainable = f"{r['trainable_parameters']:,} ({r['trainable_fraction']:.1%})"
        model = f"{r['model']} (`{r['spec']}`)"
        accuracy = f"{r['eval_accuracy']:.4f}"
        cells = [r["task"], model, r["mode"], accuracy, trainable, str(r["steps"]), r["date"]]
        lines.append("| " + " | ".join(cells) + " |")
    write_text_atomic(out / "transfer.md", "\n".join(lines) + "\n")


def _named(text: str) -> tuple[str, str]:
    name, _, spec = text.partition("=")
    if not spec:
        raise argparse.ArgumentTypeError(f"expected NAME=SPEC, got {text!r}")
    return name, spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=_named, action="append", required=True, help="NAME=SPEC (repeatable)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--modes", nargs="+", choices=("petl", "full"), default=["petl"])
    p.add_argument(
        "--reuse", type=Path, action="append", default=[], help="merge rows of another transfer.json"
    )
    p.add_argument(
        "--work", type=Path, default=None, help="data and extracted checkpoints [default: a temp dir]"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "transfer")
    report = run(p.parse_args())
    print(
        json.dumps([(r["task"], r["model"], r["mode"], round(r["eval_accuracy"], 4)) for r in report["rows"]])
    )


if __name__ == "__main__":
    main()
