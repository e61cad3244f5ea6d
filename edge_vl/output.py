"""Where a build writes its bundle: nothing of the user's is ever deleted, and a crash at any
instant leaves either no bundle (a first build), the old bundle, or the new one at ``--out``.

- :func:`check_output` refuses, before any work, an ``--out`` that is the working directory or one
  of its parents, a symbolic link, a file, a directory that is not an edge-vl bundle (unless
  empty), a bundle holding files its manifest does not list, or one that is or contains any input
  of the build (data, images, model, prompts) — with or without ``--overwrite``.
- :class:`OutputLock` lets one build at a time write an ``--out`` (an ``flock`` on
  ``.<name>.lock`` next to it, released by the kernel if the process dies), and removes what
  killed builds left: staging copies, and old bundles a swap did not finish removing.
- :func:`staged_bundle` writes into a staging directory next to ``--out`` and swaps it in with one
  atomic ``renameat2(RENAME_EXCHANGE)``; where the kernel or filesystem lacks it, with two renames,
  and the next build restores the old bundle if a crash fell between them.

Imports no torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from edge_vl.errors import BuildError, OutputError
from edge_vl.fileio import free_space, fsync_dir, fsync_tree, is_no_space, umask
from edge_vl.manifest import MANIFEST_NAME, SIGNATURE_NAME

STAGING_PREFIX, OLD_PREFIX = "staging-", "old-"


def check_output(out: Path, inputs: Mapping[str, Iterable[Path]], *, overwrite: bool) -> None:
    """Refuse an ``--out`` a build must not write (see the module docstring). ``inputs`` maps a
    role ("the training data", …) to the paths the build reads.

    Raises:
        OutputError: with what is wrong and what to do instead.
    """
    out = Path(out)
    if out.is_symlink():
        raise OutputError(f"--out {out} is a symbolic link; give the directory it points to, or a new one")
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(
            f"--out {out} is the working directory or one of its parents; name a new directory for the bundle"
        )
    for role, paths in inputs.items():
        for path in paths:
            resolved = Path(path).resolve()
            if resolved == real or real in resolved.parents:
                raise OutputError(
                    f"--out {out} {'is' if resolved == real else 'contains'} {role} ({path}); "
                    "write the bundle to a new directory"
                )
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"--out {out} is a file; a bundle is a directory")
    manifest = bundle_manifest(out)
    if manifest is None:
        if any(out.iterdir()):
            raise OutputError(
                f"--out {out} is a directory that is not an edge-vl bundle (it has no {MANIFEST_NAME}); "
                "edge-vl writes only into a new or empty directory or replaces a bundle"
            )
        return
    if not overwrite:
        raise OutputError(f"--out {out} already holds a bundle; choose another --out or pass --overwrite")
    listed = set(manifest.get("files", {})) | {MANIFEST_NAME, SIGNATURE_NAME}
    extra = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if not p.is_dir() or p.is_symlink()
        if p.relative_to(out).as_posix() not in listed
    )
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise OutputError(
            f"--out {out} holds files its bundle manifest does not list ({shown}); move them away "
            "before --overwrite replaces the bundle"
        )


def bundle_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of an edge-vl bundle in ``directory`` (any format version), or None."""
    path = directory / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
        return None
    try:
        data = json.loads(path.read_bytes()[: 16 << 20].decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("format_version"), int)
    return data if ok and isinstance(data.get("files"), dict) else None


class OutputLock:
    """Exclusive right to write ``out`` (context manager). On entry it also cleans up after killed
    builds of the same ``out``: staging copies are removed, and an old bundle left by an unfinished
    two-rename swap is moved back if ``out`` is missing.

    Raises:
        BuildError: another build holds the lock (its process id is named).
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.out.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise BuildError(
                    f"another edge-vl build (process {holder}) is writing {self.out}; wait for it to "
                    "finish, or choose another --out"
                ) from None
            try:  # the file we locked may have been unlinked by a build that just finished
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        recover(self.out)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def leftovers(out: Path, prefix: str) -> list[Path]:
    """Sibling directories a build of ``out`` made with ``prefix`` (staging or old copies)."""
    pattern = f".{out.name}.{prefix}*"
    return sorted(p for p in out.parent.glob(pattern) if p.is_dir() and not p.is_symlink())


def recover(out: Path) -> None:
    """Undo what a killed build left (call with the lock held)."""
    olds = leftovers(out, OLD_PREFIX)
    if not out.exists() and olds:  # killed between the two renames of a fallback swap
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        if bundle_manifest(newest) is not None:
            os.rename(newest, out)
            olds.remove(newest)
    for stale in olds + leftovers(out, STAGING_PREFIX):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_bundle(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory next to ``out``; when the block ends with a manifest
    written, swap it in for ``out`` atomically. If the block raises, the staging directory is
    removed and ``out`` is untouched. A full disk becomes a :class:`BuildError` naming the path and
    the free space."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.{STAGING_PREFIX}", dir=out.parent))
    staging.chmod(0o777 & ~umask())  # mkdtemp makes 0700; a bundle is meant to be shared
    try:
        try:
            yield staging
            if not (staging / MANIFEST_NAME).is_file():
                raise RuntimeError("internal error: bundle staged without a manifest")
            check_output(out, {}, overwrite=overwrite)  # still safe after a long build?
            fsync_tree(staging)
            swap_in(staging, out)
        except OSError as e:
            if is_no_space(e):
                raise BuildError(
                    f"no space left on the disk writing the bundle {out} ({free_space(out)})"
                ) from e
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_in(staging: Path, out: Path) -> None:
    """Make ``staging`` the directory at ``out`` atomically, then remove what was there."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        os.rename(staging, out)  # replaces an empty directory in one step
        fsync_dir(out.parent)
        return
    if exchange(staging, out):  # one atomic step: out is the new bundle, staging the old one
        fsync_dir(out.parent)
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.{OLD_PREFIX}", dir=out.parent))
    old.rmdir()
    os.rename(out, old)  # a crash right here: the next build's OutputLock moves ``old`` back
    os.rename(staging, out)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
