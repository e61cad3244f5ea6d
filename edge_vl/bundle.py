"""The bundle: one directory a device loads. Written atomically, verified on every load.

Layout (all paths relative to the bundle directory)::

    manifest.json     this format; sorted keys; ``files`` lists the sha256 and size of every other file
    model.xml/.bin    OpenVINO IR of the retained subgraph
    tokenizer.json    the tokenizer the model was trained with (``tokenizers`` format)

Manifest keys (format version 1):

- ``format_version`` (int), ``edge_vl_version``, ``created`` (UTC ISO time), ``versions``
  (openvino, torch, transformers, … used to build)
- ``runtime``: ``profiles`` (the runtime profiles whose OpenVINO reads every IR file, see
  :mod:`edge_vl.runtime.profiles`) and ``max_opset`` (highest operator set the IR uses)
- ``architecture``: ``family``, ``model_type``, ``source``, ``arms`` (names, search order),
  ``skipped`` (arm indices bypassed by skip adapters), ``kept``
- ``model``: ``xml``, ``bin``, ``precision``, ``inputs``/``outputs`` (name, shape with -1 for a
  dynamic dimension, dtype)
- ``preprocessing``: ``image`` (see :mod:`edge_vl.runtime.preprocess`), ``text`` (``tokenizer``,
  ``max_length``, ``pad_id``, ``pad_token``)
- ``head``: ``kind`` (``sigmoid`` or ``softmax``: how logits become scores) and ``labels``
- ``metrics``, ``training``: what the build measured and how it trained
- ``files``: ``{relative path: {"sha256": hex, "size": bytes}}``

This module imports no torch: the device uses it to verify bundles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_vl.errors import BundleError, IncompatibleBundleError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "architecture", "model", "preprocessing", "head", "files")


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its directory and parsed manifest."""

    path: Path
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        """Absolute path of a file the manifest lists."""
        return self.path / name

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["head"]["labels"])


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Load and check a bundle directory.

    Raises:
        BundleError: the directory or manifest is missing or unreadable, a required key is
            absent, a listed file is missing, or (with ``verify``) a file's sha256 differs.
        IncompatibleBundleError: the bundle uses a newer format than this edge-vl reads.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle directory not found: {root}")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path}: cannot parse manifest ({e})") from e
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: manifest must be a JSON object")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{manifest_path}: 'format_version' missing or not an integer")
    if version > FORMAT_VERSION:
        raise IncompatibleBundleError(
            f"{root}: bundle format version {version} is newer than this edge-vl reads "
            f"(up to {FORMAT_VERSION}); upgrade edge-vl on this device"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{manifest_path}: manifest lacks key(s) {missing}")
    files = manifest["files"]
    for name, meta in sorted(files.items()):
        file_path = root / name
        if not file_path.is_file():
            raise BundleError(f"{root}: file {name!r} listed in the manifest is missing")
        if verify:
            size = file_path.stat().st_size
            if size != meta.get("size"):
                raise BundleError(f"{root}: file {name!r} has {size} bytes, manifest says {meta.get('size')}")
            digest = sha256_file(file_path)
            if digest != meta.get("sha256"):
                raise BundleError(
                    f"{root}: file {name!r} was modified (sha256 {digest[:12]}… does not "
                    f"match the manifest's {str(meta.get('sha256'))[:12]}…)"
                )
    return Bundle(path=root, manifest=manifest)


@contextlib.contextmanager
def staged_bundle(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; on success it is renamed to ``out``.

    Nothing is left behind if the body raises: the staging directory is removed and ``out`` is
    untouched. Call :func:`finalize_manifest` inside the block to write the manifest.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise BundleError(f"output {out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a bundle is meant to be shared
    try:
        yield staging
        if not (staging / MANIFEST_NAME).is_file():
            raise BundleError("internal error: bundle staged without a manifest")
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def finalize_manifest(staging: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Hash every file in ``staging`` into ``manifest['files']`` and write ``manifest.json``."""
    full = dict(manifest)
    full["format_version"] = FORMAT_VERSION
    full["files"] = {
        p.relative_to(staging).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }
    write_json_atomic(staging / MANIFEST_NAME, full)
    return full


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON (sorted keys, UTF-8) to a temp file in the same directory, then rename it."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text to a temp file in the same directory, then rename it over ``path``: a
    reader sees the old file or the new one, never a half-written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _replace_dir(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(src, dst)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    backup.rmdir()
    os.replace(dst, backup)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(backup, dst)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
