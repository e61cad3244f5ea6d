"""The exceptions edge-vl raises. Library code raises these; only the CLI turns them into exit codes.

Hierarchy::

    EdgeVLError
    ├── DataError               a training/eval manifest row is bad (names file and line)
    ├── InputError              an image or text given to the Predictor cannot be used
    ├── BundleError             a bundle is missing, incomplete or tampered with
    │   └── IncompatibleBundleError   a bundle from a newer format / an unsupported runtime
    ├── ModelError              a checkpoint cannot be loaded or adapted
    ├── ExportError             conversion to OpenVINO failed or failed its parity check
    ├── CPUError                this CPU lacks an instruction set the runtime needs
    ├── MissingExtraError       a build-only feature was called in a runtime-only install
    └── Interrupted             a build was stopped (SIGINT/SIGTERM) after saving a checkpoint
"""

from __future__ import annotations


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


class CPUError(EdgeVLError):
    """The CPU lacks an instruction set that the installed OpenVINO needs."""


class MissingExtraError(EdgeVLError):
    """A build-time feature was used in an install without the ``build`` extra."""

    exit_code = 2

    def __init__(self, feature: str, extra: str = "build"):
        super().__init__(
            f"{feature} needs the '{extra}' extra (torch, transformers, nncf); "
            f'install it with: pip install "edge-vl[{extra}]"'
        )


class Interrupted(EdgeVLError):
    """A long step was stopped by a signal after its state was checkpointed; rerun to resume."""

    exit_code = 130
