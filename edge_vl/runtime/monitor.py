"""Drift monitoring on the device: a small SQLite store of prediction signals, and triggers that
say when inputs or answers no longer look like the build's reference and what to do about it.

``Predictor(bundle, monitor="/var/lib/edge-vl/monitor.db")`` records each prediction's
:class:`~edge_vl.runtime.signals.Signals` (numbers only — no image or text) in a SQLite database:
the embedded store every device already has, crash-safe (each write is a transaction in
write-ahead-log mode, so ``kill -9`` mid-write loses at most that row), shared by several processes
(they wait for each other's writes, up to :data:`BUSY_TIMEOUT_S`), and bounded: past ``max_rows``
the oldest rows are deleted.

``edge-vl monitor BUNDLE STORE`` (:func:`check_drift`) compares the most recent ``window``
predictions with the bundle's reference profile by the population stability index (PSI) of every
signal, and the abstention rate with the reference's; a trigger fires above its threshold
(:class:`Thresholds`; PSI above 0.25 is the customary "significant shift") and names what to do.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_vl.errors import InputError
from edge_vl.manifest import ReferenceProfile
from edge_vl.runtime.signals import NUMERIC_SIGNALS, Signals, label_psi, psi

#: a writer waits this long for another process's write before giving up
BUSY_TIMEOUT_S = 10.0
#: rows kept by default (a few MB)
MAX_ROWS = 100_000
_COLUMNS = ("bundle", "label", "abstained", *NUMERIC_SIGNALS)


class MonitorStore:
    """A bounded SQLite table of prediction signals (see the module docstring)."""

    def __init__(self, path: str | Path, *, max_rows: int = MAX_ROWS):
        if max_rows < 1:
            raise InputError(f"max_rows must be at least 1, got {max_rows}")
        self.path, self.max_rows = Path(path), int(max_rows)
        if self.path.exists() and not self.path.is_file():
            raise InputError(f"monitor store {self.path} is not a file")
        if not self.path.parent.is_dir():
            raise InputError(f"monitor store {self.path}: the folder {self.path.parent} does not exist")
        #: the connection :meth:`record` writes through (one per process, opened on first use)
        self._db: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        #: connections a parent opened before a fork: SQLite forbids using or closing them here
        self._inherited: list[sqlite3.Connection] = []
        with self._connect() as db:
            columns = ", ".join(f"{c} REAL" for c in NUMERIC_SIGNALS)
            db.execute(
                "CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, "
                f"bundle TEXT, label TEXT, abstained INTEGER, {columns})"
            )

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise InputError(f"monitor store {self.path}: cannot open it ({e})") from None
        try:
            self._set_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as e:
            db.close()
            raise InputError(f"monitor store {self.path}: not a usable SQLite database ({e})") from None
        return db

    @staticmethod
    def _set_wal(db: sqlite3.Connection) -> None:
        """WAL mode, retried while another process holds the lock: switching a new file to WAL can
        fail at once with "database is locked" (SQLite's busy timeout does not cover it), so two
        Predictors starting together on one store would otherwise lose one of them."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own for one read (or the table's creation), closed afterwards."""
        db = self._open()
        try:
            yield db
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as e:
            raise InputError(f"monitor store {self.path}: not a usable SQLite database ({e})") from None
        finally:
            db.close()

    def _writer(self) -> sqlite3.Connection:
        """This process's write connection: kept open, as every prediction writes (in a forked
        child, the parent's connection is set aside unused and a new one opened)."""
        if self._pid != os.getpid():
            self._inherited += [self._db] if self._db is not None else []
            self._db, self._pid, self._lock = None, os.getpid(), threading.Lock()
        if self._db is None:
            self._db = self._open()
        return self._db

    def record(self, signals: Sequence[Signals], bundle: str = "") -> None:
        """Append ``signals`` (one transaction) and keep at most ``max_rows`` rows."""
        rows = [
            (time.time(), bundle, s.label, int(s.abstained), *(s.numeric().get(c) for c in NUMERIC_SIGNALS))
            for s in signals
        ]
        marks = ", ".join("?" * (1 + len(_COLUMNS)))
        oldest = "DELETE FROM predictions WHERE id <= (SELECT MAX(id) FROM predictions) - ?"
        with self._lock:
            db = self._writer()
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    f"INSERT INTO predictions (time, {', '.join(_COLUMNS)}) VALUES ({marks})", rows
                )
                db.execute(oldest, (self.max_rows,))
                db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                self.close()  # reopened by the next record: a replaced or repaired file works again
                raise InputError(f"monitor store {self.path}: not a usable SQLite database ({e})") from None

    def close(self) -> None:
        """Close this process's write connection (a later :meth:`record` opens a new one)."""
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        elif self._db is not None:  # a parent's: never closed here (see _writer)
            self._inherited.append(self._db)
        self._db = None

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` most recent rows, oldest first."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM predictions ORDER BY id DESC LIMIT ?", (int(n),)).fetchall()
        return [dict(r) for r in reversed(rows)]

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])


@dataclass(frozen=True)
class Thresholds:
    """When a trigger fires: a signal's PSI above ``psi``; the abstention rate above
    ``abstain_ratio`` × the reference's (and above ``abstain_floor``); fewer than ``min_rows``
    recent predictions fire nothing (too few to tell)."""

    psi: float = 0.25
    abstain_ratio: float = 2.0
    abstain_floor: float = 0.05
    min_rows: int = 100


#: what each trigger means and what to do, by signal
ADVICE = {
    "inputs": "inputs no longer look like the training data (camera, lighting, products?): re-evaluate "
    "on fresh labelled rows with `edge-vl eval`, and rebuild with them if accuracy dropped",
    "confidence": "the model's confidence no longer looks as on its held-out rows: re-evaluate with "
    "`edge-vl eval`",
    "answers": "the mix of answers changed: check whether production changed, and re-evaluate with "
    "`edge-vl eval`",
    "abstentions": "more inputs are answered 'not sure' than at build time: route them to a person and "
    "re-evaluate with `edge-vl eval`; rebuild with such rows if they are a new kind of input",
}
_KIND = {"confidence": "confidence", "label": "answers", "abstained": "abstentions"}


@dataclass(frozen=True)
class Trigger:
    signal: str
    value: float
    threshold: float
    kind: str
    advice: str


@dataclass
class DriftReport:
    rows: int
    scores: dict[str, float] = field(default_factory=dict)
    triggers: list[Trigger] = field(default_factory=list)
    note: str = ""

    @property
    def fired(self) -> bool:
        return bool(self.triggers)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fired": self.fired}


def check_drift(
    reference: ReferenceProfile, rows: Sequence[dict[str, Any]], thresholds: Thresholds = Thresholds()
) -> DriftReport:
    """Compare recent prediction rows (:meth:`MonitorStore.recent`) with the reference profile."""
    report = DriftReport(rows=len(rows))
    if len(rows) < thresholds.min_rows:
        report.note = (
            f"{len(rows)} predictions recorded; at least {thresholds.min_rows} are needed to judge drift"
        )
        return report
    for name, hist in reference.signals.items():
        values = [r[name] for r in rows if r.get(name) is not None]
        if values:
            report.scores[name] = psi(hist, values)
    report.scores["label"] = label_psi(reference.labels, [r["label"] for r in rows])
    abstained = sum(r["abstained"] for r in rows) / len(rows)
    report.scores["abstained"] = abstained
    for name, value in report.scores.items():
        if name == "abstained":
            limit = max(thresholds.abstain_floor, thresholds.abstain_ratio * reference.abstain_rate)
        else:
            limit = thresholds.psi
        if value > limit:
            kind = _KIND.get(name, "inputs")
            report.triggers.append(Trigger(name, value, limit, kind, ADVICE[kind]))
    return report
