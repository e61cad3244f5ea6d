"""How benchmark results record commands and paths: relative to the repository, never a
machine's folders. No torch import, so light scripts (``processes.py``) can use it."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def portable(arg: str) -> str:
    """A command-line argument as results record it: paths inside the repository relative to it,
    other absolute paths as ``<scratch>/…`` (results name no machine's folders); also the path of
    a ``NAME=PATH`` argument."""
    name, sep, value = arg.rpartition("=")
    if sep and value.startswith("/"):
        return f"{name}={portable(value)}"
    if not arg.startswith("/"):
        return arg
    path = Path(arg).resolve()
    if path.is_relative_to(REPO):
        return str(path.relative_to(REPO))
    return "<scratch>/" + "/".join(path.parts[-2:])


def this_command() -> str:
    """The running script's command line as results record it (paths made :func:`portable`): a
    script of this repository as the module it is run as (``python -m examples.benchmarks.x``)."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO) and script.suffix == ".py":
        head = ["-m", ".".join(script.relative_to(REPO).with_suffix("").parts)]
    else:
        head = [portable(str(script))]
    return " ".join(["python", *head, *map(portable, sys.argv[1:])])


def write_results(out: Path, results: dict[str, Any], **stamp: Any) -> None:
    """Write ``results`` to ``out`` (atomically, making its folder), stamped with the command and
    the time that made them and any further ``stamp`` fields."""
    from edge_vl.fileio import write_text_atomic

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results.update(command=this_command(), measured=now, **stamp)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(results, indent=2) + "\n")


def write_timed_results(out: Path, results: dict[str, Any], runs: int) -> None:
    """:func:`write_results` of timed runs: also the rounds and the machine."""
    from edge_vl.runtime.cpu import machine_info

    write_results(out, results, runs=runs, machine=machine_info())
