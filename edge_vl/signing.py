"""Signed bundles: an Ed25519 signature of ``manifest.json``'s bytes, in ``signature.json``.

The manifest lists the size and sha256 of every other file and carries its own hash, so a valid
signature covers the whole bundle: a device that trusts the key knows the bundle comes from the
build machine that holds the private key, unchanged. Keys are PEM files (PKCS#8 private key,
SubjectPublicKeyInfo public key) made by ``edge-vl keygen``; the private key stays on the build
machine, the public key goes to devices.

``signature.json``: ``{"algorithm": "ed25519", "key_id": <16 hex digits>, "signature": <base64>}``,
where ``key_id`` is the start of the sha256 of the raw public key (it names the key in messages).

The cryptography comes from ``cryptography`` (the ``signing`` extra), imported only when a
signature is made or checked. A device enforces signatures when it is given trusted keys:
``Predictor(bundle, trusted_keys=[...])``, ``edge-vl predict --trusted-key``, or the
``EDGE_VL_TRUSTED_KEYS`` environment variable (key files separated by ``os.pathsep``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_vl.errors import BundleError, MissingExtraError
from edge_vl.fileio import write_json_atomic
from edge_vl.manifest import MANIFEST_NAME, SIGNATURE_NAME

TRUSTED_KEYS_ENV = "EDGE_VL_TRUSTED_KEYS"
ALGORITHM = "ed25519"


def _crypto(feature: str):
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingExtraError(feature, "signing") from None
    return serialization, ed25519


def generate_key(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair (private key readable by its owner only); returns its key id.
    Refuses to overwrite existing files."""
    serialization, ed25519 = _crypto("edge-vl keygen")
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; keygen never overwrites a key")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(public)


def key_id(public_key: Any) -> str:
    """Short id of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    serialization, _ = _crypto("signed bundles")
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from a PEM file (``edge-vl keygen``)."""
    serialization, ed25519 = _crypto("signing bundles")
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise BundleError(f"{path}: not a readable unencrypted PEM private key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 key (edge-vl signs with Ed25519; see edge-vl keygen)")
    return key


def load_public_key(source: Any) -> Any:
    """An Ed25519 public key from a PEM file path, PEM bytes, or a key object."""
    serialization, ed25519 = _crypto("verifying signed bundles")
    if isinstance(source, ed25519.Ed25519PublicKey):
        return source
    what = "PEM bytes" if isinstance(source, bytes) else str(source)
    try:
        pem = source if isinstance(source, bytes) else Path(source).read_bytes()
        key = serialization.load_pem_public_key(pem)
    except (OSError, ValueError, TypeError) as e:
        raise BundleError(f"{what}: not a readable PEM public key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(f"{what}: not an Ed25519 public key")
    return key


def sign_bundle(bundle: str | Path, private_key: str | Path) -> str:
    """Write ``bundle``'s ``signature.json`` (replacing an earlier one); returns the key id. Check
    the bundle first (:func:`edge_vl.bundle.read_bundle`): a signature vouches for what it signs."""
    key = load_private_key(private_key)
    root = Path(bundle)
    raw = (root / MANIFEST_NAME).read_bytes()
    kid = key_id(key.public_key())
    signature = base64.b64encode(key.sign(raw)).decode()
    write_json_atomic(root / SIGNATURE_NAME, {"algorithm": ALGORITHM, "key_id": kid, "signature": signature})
    return kid


def trusted_keys_from_env() -> list[Any] | None:
    """The keys named by ``EDGE_VL_TRUSTED_KEYS``, or None when it is unset or empty."""
    value = os.environ.get(TRUSTED_KEYS_ENV, "").strip()
    if not value:
        return None
    return [load_public_key(p) for p in value.split(os.pathsep) if p.strip()]


def verify_signature(root: Path, manifest_bytes: bytes, trusted_keys: Sequence[Any] | None) -> str | None:
    """Check that ``manifest_bytes`` carry a valid signature by one of ``trusted_keys``; returns the
    signing key's id. ``trusted_keys=None`` means the environment's keys (none: no check); an empty
    sequence means no check.

    Raises:
        BundleError: unsigned, signed by another key, or a signature that does not match.
    """
    keys = trusted_keys_from_env() if trusted_keys is None else [load_public_key(k) for k in trusted_keys]
    if not keys:
        return None
    path = root / SIGNATURE_NAME
    if not path.is_file():
        raise BundleError(f"{root}: the bundle is not signed ({SIGNATURE_NAME} is missing), and this "
                          "device accepts signed bundles only")  # fmt: skip
    record = _read_signature(path)
    trusted = {key_id(k): k for k in keys}
    key = trusted.get(record["key_id"])
    if key is None:
        raise BundleError(f"{root}: signed by key {record['key_id']}, which is not a trusted key "
                          f"(trusted: {', '.join(sorted(trusted))})")  # fmt: skip
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(record["signature"], manifest_bytes)
    except InvalidSignature:
        raise BundleError(f"{root}: the signature does not match {path.name}'s manifest: the bundle was "
                          "changed after it was signed") from None  # fmt: skip
    return record["key_id"]


def _read_signature(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes()[:65536].decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        raise BundleError(f"{path}: not a valid signature file") from None
    if not isinstance(data, dict) or data.get("algorithm") != ALGORITHM:
        raise BundleError(f"{path}: algorithm: expected {ALGORITHM!r}")
    if not isinstance(data.get("key_id"), str):
        raise BundleError(f"{path}: key_id: expected a string")
    try:
        signature = base64.b64decode(str(data.get("signature")), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{path}: signature: not base64") from None
    return {"key_id": data["key_id"], "signature": signature}
