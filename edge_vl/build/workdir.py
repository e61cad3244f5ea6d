"""A build's resumable state: the work directory next to the bundle (``.<out>.work/``) with the
search and fine-tune checkpoints and the finished skip plan, the fingerprint that a resumed build
must match, and the signal handling that stops training at a step boundary."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_vl.build.config import BuildConfig
from edge_vl.build.dataset import TrainingData
from edge_vl.data import data_fingerprint
from edge_vl.errors import BundleError
from edge_vl.fileio import write_json_atomic

WORK_STATE = "build.json"


class WorkDir:
    """The resumable state of one build: ``.<out>.work/`` next to the bundle."""

    def __init__(self, path: Path, state: dict[str, Any], *, writer: bool = True):
        self.path, self.state, self.writer = path, state, writer

    @classmethod
    def open(
        cls, config: BuildConfig, data: TrainingData, echo: Callable[[str], None], *, placement: Any = None
    ) -> WorkDir:
        """Resume the unfinished build of ``config.out`` (same fingerprint) or start a new one. With
        several processes rank 0 opens it, the others read it after rank 0 has (and never write)."""
        out = Path(config.out)
        path = out.parent / f".{out.name}.work"
        digest = fingerprint(config, data)
        state_file = path / WORK_STATE
        if placement is not None and not placement.is_main:
            placement.barrier()  # rank 0 has opened (or made) it
            return cls(path, json.loads(state_file.read_text(encoding="utf-8")), writer=False)
        work = cls._open_as_writer(config, path, digest, echo)
        if placement is not None:
            placement.barrier()
        return work

    @classmethod
    def _open_as_writer(
        cls, config: BuildConfig, path: Path, digest: str, echo: Callable[[str], None]
    ) -> WorkDir:
        state_file = path / WORK_STATE
        if path.exists() and config.restart:
            shutil.rmtree(path)
        if state_file.is_file():
            state = json.loads(state_file.read_text(encoding="utf-8"))
            if state.get("fingerprint") != digest:
                raise BundleError(
                    f"{path} holds an unfinished build with other settings or data; rerun it with the same "
                    "settings to resume, or pass --restart to discard it"
                )
            echo(f"resuming the unfinished build in {path}")
            return cls(path, state)
        path.mkdir(parents=True, exist_ok=True)
        work = cls(path, {"fingerprint": digest})
        work.update()
        return work

    def update(self, **values: Any) -> None:
        self.state.update(values)
        if self.writer:
            write_json_atomic(self.path / WORK_STATE, self.state)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """While active, SIGINT/SIGTERM only set a flag that training loops poll at step boundaries
    (a second SIGINT interrupts at once). Yields the flag's reader."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop.is_set
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def fingerprint(config: BuildConfig, data: TrainingData) -> str:
    """What a resumed build must share with the one that started: model, data (rows and image
    bytes) and settings."""
    h = hashlib.sha256()
    model_dir = Path(config.model_dir)
    h.update((model_dir / "config.json").read_bytes() if (model_dir / "config.json").is_file() else b"")
    for p in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    for rows in (data.train, data.evals):
        h.update(data_fingerprint(rows).encode())
    # what does not change the result (the device may differ between a run and its resumption)
    unrelated = ("out", "overwrite", "restart", "progress", "measure_latency", "report_variants", "sign_key",
                 "device")  # fmt: skip
    settings = {k: v for k, v in asdict(config).items() if k not in unrelated}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()
