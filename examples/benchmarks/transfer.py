"""How well edge-vl-mini checkpoints transfer: PETL-only (adapters, no layer skipped) and full
fine-tuning of the fusion stack, on easy-vqa and on a second task (:mod:`tasks`), same budget.

    python -m examples.benchmarks.transfer --model new=edge-vl-mini --model old=git:676fd64 \\
        --model random=random --tasks easy-vqa digits --modes petl full

``NAME=SPEC`` names a checkpoint: a directory, a shipped model name, ``git:REV`` (the shipped
checkpoint as committed at REV, extracted with git), or ``random`` (edge-vl-mini's pretrained
encoders with a freshly initialised fusion stack: what pretraining is worth). Every row is trained
and scored in this process (torch, no export), with the demo's settings on easy-vqa (all 38,575
training and 9,673 test questions) and :data:`BUDGETS` on the others. Rows are written to
``--out/transfer.json`` as they finish; a rerun takes the rows already there with the same
settings, so a long run can be split (or run as two processes with different ``--model``, one
thread each, into different ``--out`` and merged with ``--reuse``).

``--recipe NAME=KEY=VALUE,…`` (repeatable) trains variants that change only what they name — adapter
sizes (``petl_ratio``, ``attention_rank``, ``ffn_rank``, …), learning rates, seed — e.g. the PETL seed spread:

    python -m examples.benchmarks.transfer --model shipped=edge-vl-mini --tasks easy-vqa \
        --recipe seed1=seed=1 --recipe seed2=seed=2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_type_hints

import torch

from edge_vl.config import AdapterConfig, BuildConfig, TrainConfig, resolve_model_dir
from edge_vl.demo import FULL_DEMO
from edge_vl.fileio import sha256_file, write_text_atomic
from edge_vl.pipeline import package_versions
from edge_vl.runtime.cpu import cpu_name
from edge_vl.training.losses import LOSSES
from examples.benchmarks.recorded import REPO, portable, this_command
from examples.benchmarks.tasks import TASKS, write_task
from examples.benchmarks.variants import FUSION_PARTS, train_and_score

#: learning rate of every committed row unless its recipe sets one (the build's default before it
#: became per-family), so the table stays reproducible
BASE_LR = 1e-3
#: training settings per task: easy-vqa as the demo; digits: 3 epochs of its 6,735 questions
BUDGETS = {
    "easy-vqa": TrainConfig(epochs=FULL_DEMO.epochs, batch_size=FULL_DEMO.batch_size, lr=BASE_LR),
    "digits": TrainConfig(epochs=3.0, batch_size=32, lr=BASE_LR),
}
#: ``--quick``: a proxy to compare checkpoints in minutes (easy-vqa: 8,000 training and 2,000 test
#: questions, one epoch); not the table's figures
QUICK = {
    "easy-vqa": (8_000, 2_000, TrainConfig(epochs=1.0, batch_size=32, lr=BASE_LR)),
    "digits": (None, None, BUDGETS["digits"]),
}
#: keys a ``--recipe`` may set: fields of the adapter config or of the training config
RECIPE_KEYS = {
    **{k: "adapters" for k in AdapterConfig.__dataclass_fields__},
    "unfreeze": "model",  # fusion-layer parts trained in full beside the adapters ("attention+ffn")
    **{k: "train" for k in ("lr", "head_lr_mult", "weight_decay", "warmup_ratio", "seed", "loss")},
}


def checkpoint(spec: str, work: Path) -> Path | str:
    """A directory (or shipped name) for ``spec`` (see the module docstring)."""
    if spec.startswith("git:"):
        rev, out = spec[4:], work / f"git-{spec[4:]}"
        if not (out / "config.json").is_file():
            out.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "model.safetensors"):
                path = f"{rev}:edge_vl/training/mini/checkpoint/{name}"
                blob = subprocess.run(
                    ["git", "-C", str(REPO), "show", path], check=True, capture_output=True
                ).stdout
                (out / name).write_bytes(blob)
        return out
    if spec == "random":
        out = work / "random-fusion"
        if not (out / "config.json").is_file():
            from edge_vl.training.mini import EdgeVLMiniConfig, EdgeVLMiniModel

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
    files = [*args.reuse, *([results_file] if results_file.is_file() else [])]
    rows = {}
    for path in files:  # rows of this --out win over reused ones
        measured = json.loads(path.read_text())
        # a row measured before rows named their command was measured by its file's command
        its_command = " ".join(map(portable, measured["command"].split()))
        for r in measured["rows"]:
            command = " ".join(map(portable, r.get("command", its_command).split()))
            rows[row_key(r)] = {**r, "command": command, "spec": portable(r["spec"])}
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = this_command()
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
            for mode, (recipe, changes) in [(m, r) for m in args.modes for r in args.recipe or [("", {})]]:
                train_cfg, adapters = apply_recipe(budget, changes)
                unfreeze = changes.get("unfreeze")
                key = (name, task, mode, recipe)
                same = {"checkpoint_sha256": digest, "budget": asdict(train_cfg), "quick": args.quick,
                        "adapters": adapters and adapters.to_dict(), "unfreeze": unfreeze}  # fmt: skip
                label = " ".join(filter(None, (name, task, mode, recipe)))
                if key in rows and all(rows[key].get(k) == v for k, v in same.items()):
                    print(f"[{label}] taken from {rows[key]['date']}", flush=True)
                    rows[key]["changes"] = changes  # same settings, so the same recipe
                    continue
                config = BuildConfig(
                    model_dir=model_dir, train_data=train, eval_data=evals, out=work / "unused",
                    train=train_cfg, adapters=adapters, skip_layers=[], progress=False,
                )  # fmt: skip
                parts = unfreeze.split("+") if unfreeze else ()
                result = train_and_score(config, full=mode == "full", unfreeze=parts)
                rows[key] = {"model": name, "spec": portable(spec), "task": task, "mode": mode,
                             "recipe": recipe, "changes": changes, "date": date, "command": command,
                             **same, **result}  # fmt: skip
                print(f"[{label}] accuracy {result['eval_accuracy']:.4f}", flush=True)
                write(args.out, report, rows)  # a crash later on keeps what was measured
    return write(args.out, report, rows)  # also when every row was taken over (a merge)


def row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return row["model"], row["task"], row["mode"], row.get("recipe", "")


def apply_recipe(budget: TrainConfig, changes: dict[str, float]) -> tuple[TrainConfig, AdapterConfig | None]:
    """The training config and adapter config (None: the family's default) of a recipe."""
    from edge_vl.training.architectures.meter import MeterFamily

    train = {k: v for k, v in changes.items() if RECIPE_KEYS[k] == "train"}
    adapters = {k: v for k, v in changes.items() if RECIPE_KEYS[k] == "adapters"}
    train_cfg = TrainConfig(**{**asdict(budget), **train})
    if not adapters:
        return train_cfg, None
    return train_cfg, AdapterConfig(**{**MeterFamily.default_adapters.to_dict(), **adapters})


def recipe_label(row: dict[str, Any]) -> str:
    """``name (key=value, …)`` of a row's recipe, ``default`` without one."""
    changes = ", ".join(
        f"{k}={v}" if isinstance(v, str) else f"{k}={v:g}" for k, v in (row.get("changes") or {}).items()
    )
    return f"{row.get('recipe') or 'default'}" + (f" ({changes})" if changes else "")


def write(out: Path, report: dict[str, Any], rows: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, Any]:
    """Write ``transfer.json`` and ``transfer.md`` into ``out``; returns the report written."""
    report = {**report, "rows": sorted(rows.values(), key=lambda r: (r["task"], *row_key(r)))}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "transfer.json", json.dumps(report, indent=2) + "\n")
    lines = [
        "# Transfer of edge-vl-mini checkpoints",
        "",
        f"Generated by `{report['command']}` ({report['date']}, {report['machine']}). Each row trains "
        "in torch with the same budget per task and scores every test question; PETL: adapters, no "
        "layer skipped; full: every fusion-stack weight, adapters none.",
        "",
        "| task | model | mode | recipe | accuracy | final loss | trainable parameters | steps | measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        trainable = f"{r['trainable_parameters']:,} ({r['trainable_fraction']:.1%})"
        model = f"{r['model']} (`{r['spec']}`)"
        accuracy = f"{r['eval_accuracy']:.4f}"
        recipe = recipe_label(r)
        loss = "–" if r.get("final_loss") is None else f"{r['final_loss']:.3f}"
        cells = [r["task"], model, r["mode"], recipe, accuracy, loss, trainable, str(r["steps"]), r["date"]]
        lines.append("| " + " | ".join(cells) + " |")
    write_text_atomic(out / "transfer.md", "\n".join(lines) + "\n")
    return report


def _recipe(text: str) -> tuple[str, dict[str, float | str]]:
    """``NAME=key=value,key=value`` → (NAME, {key: value}); keys from :data:`RECIPE_KEYS`."""
    name, _, body = text.partition("=")
    changes: dict[str, float | str] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key not in RECIPE_KEYS or not value:
            expected = f"expected KEY=VALUE with KEY one of {sorted(RECIPE_KEYS)}"
            raise argparse.ArgumentTypeError(f"{item!r}: {expected}")
        if key == "loss":  # a name from edge_vl.training.losses
            if value not in LOSSES:
                raise argparse.ArgumentTypeError(f"{item!r}: loss must be one of {sorted(LOSSES)}")
            changes[key] = value
        elif key == "unfreeze":  # parts of the fusion layers, joined by "+"
            if not set(value.split("+")) <= set(FUSION_PARTS):
                raise argparse.ArgumentTypeError(f"{item!r}: unfreeze takes {' or '.join(FUSION_PARTS)}, "
                                                 "joined by '+'")  # fmt: skip
            changes[key] = value
        else:
            changes[key] = _number(key, value)
    return name, changes


def _number(key: str, value: str) -> int | float:
    """``value`` as the type of the config field ``key`` names (int fields: integers only)."""
    owner = AdapterConfig if RECIPE_KEYS[key] == "adapters" else TrainConfig
    kind = int if get_type_hints(owner)[key] is int else float
    try:
        return kind(value)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{key}={value!r}: expected {expected}") from None


def _named(text: str) -> tuple[str, str]:
    name, _, spec = text.partition("=")
    if not spec:
        raise argparse.ArgumentTypeError(f"expected NAME=SPEC, got {text!r}")
    return name, spec


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=_named, action="append", required=True, help="NAME=SPEC (repeatable)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--modes", nargs="+", choices=("petl", "full"), default=["petl"])
    p.add_argument(
        "--recipe", type=_recipe, action="append", default=[],
        help="NAME=KEY=VALUE,... a training or adapter variant (repeatable) [default: the defaults]",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="the quick proxy budgets (QUICK), not the table's")
    p.add_argument(
        "--reuse", type=Path, action="append", default=[], help="merge rows of another transfer.json"
    )
    p.add_argument(
        "--work", type=Path, default=None, help="data and extracted checkpoints [default: a temp dir]"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "transfer")
    return p


def main() -> None:
    report = run(parser().parse_args())
    print(json.dumps([(*row_key(r), round(r["eval_accuracy"], 4)) for r in report["rows"]]))


if __name__ == "__main__":
    main()
