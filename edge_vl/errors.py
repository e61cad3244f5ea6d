"""The exceptions edge-vl raises. Library code raises these; only the CLI turns them into exit codes.

Hierarchy::

    EdgeVLError
    ├── DataError               a training/eval manifest row is bad (names file and line)
    ├── InputError              an image or text given to the Predictor cannot be used
    ├── BundleError             a bundle is missing, incomplete, tampered with or wrongly signed
    │   └── IncompatibleBundleError   a bundle from another format / an unsupported runtime
    ├── ModelError              a checkpoint cannot be loaded or adapted
    ├── ExportError             conversion to OpenVINO failed or failed its parity check
    ├── OutputError             a build's --out would put the user's files at risk
    ├── BuildError              a build cannot go on: disk full, another build writes the same --out
    ├── CPUError                this CPU lacks an instruction set the runtime needs
    ├── MissingExtraError       a build-only feature was called in a runtime-only install
    ├── ClosedError             a Predictor was used after close()
    └── Interrupted             a build was stopped (SIGINT/SIGTERM) after saving a checkpoint
"""

from __future__ import annotations

from typing import ClassVar


class EdgeVLError(Exception):
    """Base class of every error edge-vl raises on purpose."""

    #: exit code used by the CLI for this kind of error
    exit_code = 1


class DataError(EdgeVLError):
    """A data manifest (JSONL/CSV) or one of its rows is invalid; the message names file and line."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class InputError(EdgeVLError):
    """An image or a text passed to the Predictor cannot be used."""

    exit_code = 2


class BundleError(EdgeVLError):
    """A bundle directory is missing, incomplete, or a file's hash does not match the manifest."""

    exit_code = 2


class IncompatibleBundleError(BundleError):
    """A bundle was written by a newer format version or needs a runtime this install lacks."""


class ModelError(EdgeVLError):
    """A model checkpoint cannot be loaded, or its architecture is not supported."""

    exit_code = 2


class ExportError(EdgeVLError):
    """Conversion to OpenVINO failed, or the converted model disagrees with torch."""


class OutputError(EdgeVLError):
    """``--out`` is refused before any work: it is an input, the working directory, or a directory
    that is not an edge-vl bundle (nothing of the user's is ever replaced)."""

    exit_code = 2


class BuildError(EdgeVLError):
    """A build cannot continue: the disk is full (the message names the path and the free space),
    or another build is writing the same ``--out``."""


class ClosedError(EdgeVLError):
    """A :class:`~edge_vl.Predictor` was used after :meth:`~edge_vl.Predictor.close`."""


class CPUError(EdgeVLError):
    """The CPU lacks an instruction set that the installed OpenVINO needs."""


class MissingExtraError(EdgeVLError):
    """A feature needs an optional extra that this install lacks (the message says how to add it)."""

    exit_code = 2
    #: what each extra brings, for the message
    EXTRAS: ClassVar[dict[str, str]] = {
        "build": "torch, transformers, nncf",
        "signing": "cryptography",
        "demo": "easy-vqa",
        "metrics": "prometheus_client",
    }

    def __init__(self, feature: str, extra: str = "build"):
        brings = self.EXTRAS.get(extra)
        super().__init__(
            f"{feature} needs the '{extra}' extra{f' ({brings})' if brings else ''}; "
            f'install it with: pip install "edge-vl[{extra}]"'
        )


class Interrupted(EdgeVLError):
    """A long step was stopped by a signal after its state was checkpointed; rerun to resume."""

    exit_code = 130
