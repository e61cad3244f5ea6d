"""Small file helpers every part of edge-vl shares: atomic writes, hashing, durable directories.

Imports no torch.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

#: errno values that mean "no room": a full disk or an exhausted quota
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON (sorted keys, UTF-8) to a temp file in the same directory, then rename it."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write`` on a temp file in the same directory, flush it to disk, then rename it over
    ``path``: a reader sees the old file or the new one, never a half-written one, and a failed
    write leaves no temp file behind (e.g. ``write_atomic(p, lambda f: torch.save(state, f))``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` to disk (before a directory is swapped in)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_no_space(error: BaseException) -> bool:
    """True for an ``OSError`` that means the disk (or quota) is full."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


#: below this much free space, a failed write is taken for a full disk (torch and OpenVINO raise
#: RuntimeErrors without an errno)
LOW_SPACE = 64 << 20


def disk_full(error: BaseException, path: Path) -> bool:
    """Whether ``error`` (raised while writing under ``path``) most likely means a full disk."""
    if is_no_space(error):
        return True
    try:
        return shutil.disk_usage(path).free < LOW_SPACE
    except OSError:
        return False


def free_space(path: Path) -> str:
    """Free space on the filesystem of ``path`` (or its nearest existing parent), for messages."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown free space"
    return f"{free / 1e6:,.0f} MB free" if free >= 1e6 else f"{free:,} bytes free"


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
