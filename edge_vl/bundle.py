"""The bundle: one directory a device loads. Its manifest is a typed schema, verified on every load.

Layout (paths relative to the bundle directory)::

    manifest.json     the :class:`~edge_vl.manifest.Manifest` (sorted keys); ``files`` lists every other file
    signature.json    optional: an Ed25519 signature of manifest.json's bytes (:mod:`edge_vl.signing`)
    model.xml/.bin    OpenVINO IR of the retained subgraph
    tokenizer.json    the tokenizer the model was trained with (``tokenizers`` format)
    report.html/.json what the build measured, for people

The manifest is the contract between the build machine and the device: the build writes it
through :func:`finalize_manifest` (which parses it with the schema first, so an invalid manifest
is never written) and the device reads it with :func:`read_bundle`. Reading checks, before any
file is opened: the format version; ``manifest_sha256`` (the hash of the manifest's own canonical
JSON, so an edited or corrupted value is caught); every field's type and range (a
:class:`~edge_vl.errors.BundleError` names the field); that every path is a plain relative path
inside the bundle; that every file the runtime opens is listed in ``files``. Then each listed file's
size and sha256. :meth:`Bundle.read_verified` returns a file's bytes only if they hash to the
manifest's value, so what OpenVINO loads is exactly what was verified.

Hashes catch accidents; anyone who can write a bundle can recompute them. Signatures
(:mod:`edge_vl.signing`) tell a device that a bundle comes from a trusted build machine.

This module imports no torch: the device uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_vl.errors import BundleError, IncompatibleBundleError
from edge_vl.fileio import write_json_atomic

# the schema, re-exported: the manifest is part of the bundle format
from edge_vl.manifest import FORMAT_VERSION as FORMAT_VERSION
from edge_vl.manifest import MANIFEST_NAME as MANIFEST_NAME
from edge_vl.manifest import SIGNATURE_NAME as SIGNATURE_NAME
from edge_vl.manifest import TEXT_INPUTS as TEXT_INPUTS
from edge_vl.manifest import Architecture as Architecture
from edge_vl.manifest import FileEntry as FileEntry
from edge_vl.manifest import Head as Head
from edge_vl.manifest import ImageSpec as ImageSpec
from edge_vl.manifest import Manifest as Manifest
from edge_vl.manifest import ModelSpec as ModelSpec
from edge_vl.manifest import Preprocessing as Preprocessing
from edge_vl.manifest import RuntimeInfo as RuntimeInfo
from edge_vl.manifest import TensorSpec as TensorSpec
from edge_vl.manifest import TextBucket as TextBucket
from edge_vl.manifest import TextSpec as TextSpec
from edge_vl.schema import SchemaError, parse, to_json

# torch-free; cryptography is imported only when a signature is checked
from edge_vl.signing import Signature, TrustPolicy

#: a manifest larger than this is not a manifest (protects the reader's memory)
MAX_MANIFEST_BYTES = 16 << 20


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its directory, typed manifest, and the manifest as JSON (``data``)."""

    path: Path
    manifest: Manifest
    data: dict[str, Any]
    #: the checked signature (key id and release), when the trust policy asked for one
    signature: Signature | None = None

    @property
    def signed_by(self) -> str | None:
        """The id of the key (:func:`edge_vl.signing.key_id`) that signed the manifest, when checked."""
        return self.signature.key_id if self.signature else None

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def file(self, name: str) -> Path:
        """Path of a file the manifest lists (only those)."""
        if name not in self.manifest.files:
            raise BundleError(f"{self.path}: {name!r} is not listed in the manifest")
        return self.path / name

    def read_verified(self, name: str) -> np.ndarray:
        """A listed file's bytes (a writable uint8 array), read once and checked against its size and
        sha256 — the bytes returned are the bytes verified."""
        entry = self.manifest.files.get(name)
        if entry is None:
            raise BundleError(f"{self.path}: {name!r} is not listed in the manifest")
        path = _inside(self.path, name)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != entry.size:
                    raise BundleError(
                        f"{self.path}: file {name!r} was modified (its size differs from the manifest)"
                    )
                data = np.empty(size, dtype=np.uint8)
                if f.readinto(data.data) != size:
                    raise BundleError(f"{self.path}: file {name!r} changed while it was read")
        except OSError as e:
            raise BundleError(f"{self.path}: cannot read {name!r} ({e.strerror})") from e
        if hashlib.sha256(data.data).hexdigest() != entry.sha256:
            raise BundleError(f"{self.path}: file {name!r} was modified (sha256 does not match the manifest)")
        return data

    def verify_files(self, skip: Sequence[str] = ()) -> None:
        """Check the size and sha256 of every listed file except ``skip`` (read elsewhere)."""
        for name in sorted(self.manifest.files):
            if name not in skip:
                self.read_verified(name)


def read_bundle(
    path: str | Path,
    *,
    verify: bool = True,
    trusted_keys: Sequence[Any] | str | Path | None = None,
    min_release: int | None = None,
    trust: TrustPolicy | None = None,
) -> Bundle:
    """Load and check a bundle directory (see the module docstring).

    Args:
        verify: also check every listed file's size and sha256 (the structure is always checked).
        trusted_keys: Ed25519 public keys (see :func:`edge_vl.signing.load_public_key`); the
            manifest must carry a valid signature by one of them. None: the keys named by the
            ``EDGE_VL_TRUSTED_KEYS`` environment variable, if it is set.
        min_release: refuse signed bundles with a lower release number (default:
            ``EDGE_VL_MIN_RELEASE``, if set). Needs trusted keys.
        trust: a resolved :class:`~edge_vl.signing.TrustPolicy` instead of the two above
            (``TrustPolicy()`` checks no signature).

    Raises:
        BundleError: not a bundle directory, an unreadable or malformed manifest (the message names
            the field), a file that is missing, outside the bundle or modified, a missing or wrong
            signature.
        IncompatibleBundleError: a bundle format this edge-vl does not read.
    """
    root = Path(path)
    if not root.exists():
        raise BundleError(f"bundle directory not found: {root}")
    if not root.is_dir():
        raise BundleError(f"{root} is a file; a bundle is a directory (the one holding {MANIFEST_NAME})")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise BundleError(f"{root} is not a bundle: {MANIFEST_NAME} is missing")
    raw = _read_limited(manifest_path)
    if trust is None:
        trust = TrustPolicy.resolve(trusted_keys, min_release=min_release)
    signature = trust.verify(root, raw)
    data = _parse_json(raw, manifest_path)
    manifest = _parse_manifest(data, manifest_path)
    bundle = Bundle(path=root, manifest=manifest, data=data, signature=signature)
    for name in manifest.files:  # no file outside the bundle, whatever verify says
        _inside(root, name)
    if verify:
        bundle.verify_files()
    return bundle


def manifest_digest(data: Mapping[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON without its ``manifest_sha256`` key."""
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise BundleError(f"{path}: cannot read the manifest ({e.strerror})") from e
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MB, not a manifest")
    return raw


def _parse_json(raw: bytes, where: Path) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise BundleError(f"{where}: not a valid JSON manifest ({reason})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{where}: the manifest must be a JSON object")
    return data


def _parse_manifest(data: dict[str, Any], where: Path) -> Manifest:
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{where}: format_version: missing or not an integer")
    if version > FORMAT_VERSION:
        raise IncompatibleBundleError(
            f"{where.parent}: bundle format version {version} is newer than this edge-vl reads "
            f"(up to {FORMAT_VERSION}); upgrade edge-vl on this device"
        )
    if version < FORMAT_VERSION:
        raise IncompatibleBundleError(
            f"{where.parent}: bundle format version {version} predates verified manifests (format "
            f"{FORMAT_VERSION}); rebuild it with this edge-vl"
        )
    if data.get("manifest_sha256") != manifest_digest(data):
        raise BundleError(f"{where}: manifest_sha256: the manifest was modified (its hash does not match)")
    try:
        return parse(Manifest, data)
    except SchemaError as e:
        raise BundleError(f"{where}: {e}") from None


def _inside(root: Path, name: str) -> Path:
    """``root/name`` if it resolves (symlinks followed) to a regular file inside ``root``; checked
    before the file is opened, so nothing outside the bundle is ever read or described."""
    path = root / name
    real_root = root.resolve()
    real = path.resolve()
    if real_root not in real.parents:
        raise BundleError(f"{root}: file {name!r} leaves the bundle directory")
    if not real.is_file():
        raise BundleError(f"{root}: file {name!r} listed in the manifest is missing")
    return path


# -- writing ---------------------------------------------------------------------------------------
def file_entries(staging: Path) -> dict[str, FileEntry]:
    """Size and sha256 of every file in ``staging`` but the manifest and the signature."""
    from edge_vl.fileio import sha256_file

    return {
        p.relative_to(staging).as_posix(): FileEntry(sha256=sha256_file(p), size=p.stat().st_size)
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST_NAME, SIGNATURE_NAME)
    }


def finalize_manifest(staging: Path, manifest: Manifest) -> Manifest:
    """List every file in ``staging``, stamp the format version and ``manifest_sha256``, check the
    result against the schema (as a device will read it), and write ``manifest.json``."""
    sealed = replace(manifest, format_version=FORMAT_VERSION, files=file_entries(staging), manifest_sha256="")
    data = to_json(sealed)
    data.pop("manifest_sha256", None)
    data["manifest_sha256"] = manifest_digest(data)
    try:
        parsed = parse(Manifest, data)
    except SchemaError as e:  # a bug in the build, never a user's fault
        raise RuntimeError(f"internal error: the build made an invalid manifest ({e})") from e
    write_json_atomic(staging / MANIFEST_NAME, data)
    return parsed
