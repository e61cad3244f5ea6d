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

from edge_vl.build_records import SkipPlan
from edge_vl.config import BuildConfig
from edge_vl.data import data_fingerprint
from edge_vl.errors import BundleError
from edge_vl.fileio import write_json_atomic
from edge_vl.pipeline.dataset import TrainingData
from edge_vl.schema import parse

WORK_STATE = "build.json"
#: sha256 of each model file by path, size and mtime: a resume hashes only files that changed
MODEL_HASHES = "model-hashes.json"


class WorkDir:
    """The resumable state of one build: ``.<out>.work/`` next to the bundle."""

    def __init__(self, path: Path, state: dict[str, Any], *, writer: bool = True, new: bool = False):
        self.path, self.state, self.writer = path, state, writer
        #: made by this run (not resumed): a run that fails before saving progress removes it
        self.new = new

    @classmethod
    def open(
        cls, config: BuildConfig, data: TrainingData, echo: Callable[[str], None], *, placement: Any = None
    ) -> WorkDir:
        """Resume the unfinished build of ``config.out`` (same fingerprint) or start a new one. With
        several processes rank 0 opens it, the others read it after rank 0 has (and never write)."""
        out = Path(config.out)
        path = out.parent / f".{out.name}.work"
        digest = fingerprint(config, data, path / MODEL_HASHES)
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
                changed = [
                    name
                    for name, sha in model_file_hashes(config.model_dir).items()
                    if state.get("model_files", {}).get(name) not in (None, sha)
                ]
                what = (
                    f"the model file(s) {', '.join(changed)} changed since it started"
                    if changed
                    else "other settings or data"
                )
                raise BundleError(
                    f"{path} holds an unfinished build with {what}; rerun it with the same model, data and "
                    "settings to resume, or pass --restart to discard it"
                )
            echo(f"resuming the unfinished build in {path}")
            return cls(path, state)
        path.mkdir(parents=True, exist_ok=True)
        files = model_file_hashes(config.model_dir, path / MODEL_HASHES)
        work = cls(path, {"fingerprint": digest, "model_files": files}, new=True)
        work.update()
        return work

    def update(self, **values: Any) -> None:
        self.state.update(values)
        if self.writer:
            write_json_atomic(self.path / WORK_STATE, self.state)

    def plan(self) -> SkipPlan | None:
        """The skip plan an earlier run of this build finished, if any."""
        return parse(SkipPlan, self.state["plan"]) if "plan" in self.state else None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def holds_progress(self) -> bool:
        """Whether a rerun could resume from here: a finished skip plan or a training checkpoint."""
        return "plan" in self.state or any(self.path.rglob("state.pt"))

    def discard_if_useless(self) -> None:
        """Remove a work directory this run made when it holds nothing to resume from (a build
        refused or failed early leaves no folder behind)."""
        if self.writer and self.new and not self.holds_progress():
            self.remove()


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


def fingerprint(config: BuildConfig, data: TrainingData, hash_cache: Path | None = None) -> str:
    """What a resumed build must share with the one that started: the bytes of every model file it
    reads (:func:`model_file_hashes`), the data (rows and image bytes) and the settings."""
    h = hashlib.sha256()
    h.update(json.dumps(model_file_hashes(config.model_dir, hash_cache), sort_keys=True).encode())
    for rows in (data.train, data.evals):
        h.update(data_fingerprint(rows).encode())
    # what does not change the result (the device may differ between a run and its resumption)
    unrelated = (
        "out",
        "overwrite",
        "restart",
        "progress",
        "measure_latency",
        "report_variants",
        "sign_key",
        "sign_release",
        "device",
        "given",
    )
    settings = {k: v for k, v in asdict(config).items() if k not in unrelated}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def model_file_hashes(model_dir: Path, cache: Path | None = None) -> dict[str, str]:
    """sha256 of every file the build reads from the model (its family's ``source_files``), by
    path. With ``cache``, a file whose size and mtime match the cached entry is not read again."""
    from edge_vl.fileio import sha256_file
    from edge_vl.training.architectures import family_for_checkpoint

    known: dict[str, Any] = {}
    if cache is not None and cache.is_file():
        with contextlib.suppress(ValueError, OSError):
            known = json.loads(cache.read_text(encoding="utf-8"))
    hashes, entries = {}, {}
    for path in family_for_checkpoint(model_dir).source_files(Path(model_dir)):
        info = path.stat()
        key = str(path.resolve())
        stamp = [info.st_size, info.st_mtime_ns]
        cached = known.get(key)
        sha = cached[2] if isinstance(cached, list) and cached[:2] == stamp else sha256_file(path)
        hashes[key], entries[key] = sha, [*stamp, sha]
    if cache is not None and cache.parent.is_dir():
        write_json_atomic(cache, entries)
    return hashes
