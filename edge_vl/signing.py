"""Signed bundles: an Ed25519 signature of the manifest and a release number, in ``signature.json``.

The manifest lists the size and sha256 of every other file and carries its own hash, so a valid
signature covers the whole bundle: a device that trusts the key knows the bundle comes from the
build machine that holds the private key, unchanged. Keys are PEM files (PKCS#8 private key,
SubjectPublicKeyInfo public key) made by ``edge-vl keygen``; the private key stays on the build
machine, the public key goes to devices.

``signature.json`` (format 2)::

    {"format": 2, "algorithm": "ed25519", "key_id": <16 hex digits>, "release": <int>,
     "signature": <base64 of the signature of signed_payload(manifest bytes, key_id, release)>}

``key_id`` is the start of the sha256 of the raw public key (it names the key in messages). The
``release`` number is signed with the manifest, so it cannot be changed without the key: a device
refuses bundles older than a minimum it is given or than the newest it has accepted
(anti-rollback, :class:`TrustPolicy`). By default a bundle's release is its build time in UTC as
``YYYYMMDDHHMMSS``; ``edge-vl sign --release N`` sets any positive number instead.

The cryptography comes from ``cryptography`` (the ``signing`` extra), imported only when a
signature is made or checked. Trust settings fail closed: a set ``EDGE_VL_TRUSTED_KEYS`` or
argument that names no usable key is an error, never "no check".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_vl.errors import BundleError, InputError, MissingExtraError
from edge_vl.fileio import write_json_atomic
from edge_vl.manifest import MANIFEST_NAME, SIGNATURE_NAME

#: key files separated by ``os.pathsep``; set: every bundle must be signed by one of them
TRUSTED_KEYS_ENV = "EDGE_VL_TRUSTED_KEYS"
#: refuse signed bundles whose release is below this number
MIN_RELEASE_ENV = "EDGE_VL_MIN_RELEASE"
#: a JSON file where the Predictor records the newest release it accepted per key
RELEASE_STATE_ENV = "EDGE_VL_RELEASE_STATE"
ALGORITHM = "ed25519"
SIGNATURE_FORMAT = 2
#: what the signature covers starts with this, so no other Ed25519 message can pass for it
_CONTEXT = b"edge-vl bundle signature 2\n"
_MAX_RELEASE = (1 << 63) - 1


@dataclass(frozen=True)
class Signature:
    """A checked signature: the signing key's id and the signed release number."""

    key_id: str
    release: int


def _crypto(feature: str):
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingExtraError(feature, "signing") from None
    return serialization, ed25519


def generate_key(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair (private key readable by its owner only); returns its key id.

    Raises:
        FileExistsError: a key file exists (keygen never overwrites a key).
        InputError: the folder of a key file does not exist.
    """
    serialization, ed25519 = _crypto("edge-vl keygen")
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"{path} exists; keygen never overwrites a key")
        if not path.parent.is_dir():
            raise InputError(f"{path}: the folder {path.parent} does not exist; create it first")
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
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise BundleError(f"{what}: not a readable PEM public key ({reason})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(f"{what}: not an Ed25519 public key")
    return key


def release_from_created(created: str) -> int:
    """A manifest's build time (ISO 8601) as the release number ``YYYYMMDDHHMMSS`` (UTC)."""
    try:
        when = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        raise BundleError(f"manifest created {created!r}: not an ISO 8601 time; give --release") from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return int(when.strftime("%Y%m%d%H%M%S"))


def signed_payload(manifest_bytes: bytes, kid: str, release: int) -> bytes:
    """The bytes a signature covers: the manifest's sha256, the key id and the release number."""
    body = {"key_id": kid, "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(), "release": release}
    return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_bundle(bundle: str | Path, private_key: str | Path, *, release: int | None = None) -> Signature:
    """Write ``bundle``'s ``signature.json`` (replacing an earlier one). ``release`` defaults to the
    build time (:func:`release_from_created`). Check the bundle first
    (:func:`edge_vl.bundle.read_bundle`): a signature vouches for what it signs."""
    key = load_private_key(private_key)
    root = Path(bundle)
    raw = (root / MANIFEST_NAME).read_bytes()
    if release is None:
        release = release_from_created(json.loads(raw).get("created"))
    _check_release(release, "release")
    kid = key_id(key.public_key())
    signature = base64.b64encode(key.sign(signed_payload(raw, kid, release))).decode()
    record = {
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "key_id": kid,
        "release": release,
        "signature": signature,
    }
    write_json_atomic(root / SIGNATURE_NAME, record)
    return Signature(kid, release)


@dataclass(frozen=True)
class TrustPolicy:
    """What a device demands of a bundle's signature: one of ``keys`` (none: no check), a release
    of at least ``min_release``, and none older than the newest recorded in ``state_file``."""

    keys: tuple[Any, ...] = ()
    min_release: int | None = None
    state_file: Path | None = None

    @property
    def checks(self) -> bool:
        return bool(self.keys)

    @classmethod
    def resolve(
        cls,
        trusted_keys: Any = None,
        *,
        min_release: int | None = None,
        release_state: str | Path | None = None,
    ) -> TrustPolicy:
        """The policy from arguments, each defaulting to its environment variable
        (``EDGE_VL_TRUSTED_KEYS``, ``EDGE_VL_MIN_RELEASE``, ``EDGE_VL_RELEASE_STATE``).

        Raises:
            InputError: a setting that names no usable key, a release that is not a positive
                integer, or a release rule without trusted keys (an unsigned number proves nothing).
            BundleError: a key file that is missing or not an Ed25519 public key.
        """
        keys = _keys_from_argument(trusted_keys) if trusted_keys is not None else _keys_from_env()
        if min_release is None and os.environ.get(MIN_RELEASE_ENV, "").strip():
            min_release = _int_setting(os.environ[MIN_RELEASE_ENV], MIN_RELEASE_ENV)
        if min_release is not None:
            _check_release(min_release, "min_release")
        if release_state is None and os.environ.get(RELEASE_STATE_ENV, "").strip():
            release_state = os.environ[RELEASE_STATE_ENV].strip()
        state = Path(release_state) if release_state is not None else None
        if (min_release is not None or state is not None) and not keys:
            raise InputError(
                "a minimum release (min_release, EDGE_VL_MIN_RELEASE, or a release state file) needs "
                "signature checks: give trusted keys (EDGE_VL_TRUSTED_KEYS or trusted_keys); a release "
                "number in an unsigned bundle proves nothing"
            )
        return cls(tuple(keys), min_release, state)

    def verify(self, root: Path, manifest_bytes: bytes) -> Signature | None:
        """Check ``root``'s signature against this policy; the signature, or None without keys.

        Raises:
            BundleError: unsigned, signed by another key, a signature that does not match, or a
                release older than the minimum or than one this device accepted (a rollback).
        """
        if not self.keys:
            return None
        path = root / SIGNATURE_NAME
        if not path.is_file():
            raise BundleError(
                f"{root}: the bundle is not signed ({SIGNATURE_NAME} is missing), and this "
                "device accepts signed bundles only"
            )
        record = _read_signature(path)
        trusted = {key_id(k): k for k in self.keys}
        key = trusted.get(record["key_id"])
        if key is None:
            raise BundleError(
                f"{root}: signed by key {record['key_id']}, which is not a trusted key "
                f"(trusted: {', '.join(sorted(trusted))})"
            )
        from cryptography.exceptions import InvalidSignature

        try:
            payload = signed_payload(manifest_bytes, record["key_id"], record["release"])
            key.verify(record["signature"], payload)
        except InvalidSignature:
            raise BundleError(
                f"{root}: the signature does not match {MANIFEST_NAME} and its release "
                "number: the bundle was changed after it was signed"
            ) from None
        signature = Signature(record["key_id"], record["release"])
        self._check_release(root, signature)
        return signature

    def _check_release(self, root: Path, signature: Signature) -> None:
        if self.min_release is not None and signature.release < self.min_release:
            raise BundleError(
                f"{root}: release {signature.release} is older than the minimum release "
                f"{self.min_release} this device requires; install a newer bundle"
            )
        newest = read_release_state(self.state_file).get(signature.key_id) if self.state_file else None
        if newest is not None and signature.release < newest:
            raise BundleError(
                f"{root}: release {signature.release} is older than release {newest}, which this device "
                f"already accepted from key {signature.key_id} (recorded in {self.state_file}): a "
                "rollback. Install the newer bundle; if going back is intended, lower that record"
            )

    def record(self, signature: Signature | None) -> None:
        """Note ``signature``'s release in the state file (a later, older bundle is then refused)."""
        if signature is None or self.state_file is None:
            return
        with _locked(self.state_file):
            releases = read_release_state(self.state_file)
            if releases.get(signature.key_id, -1) >= signature.release:
                return
            releases[signature.key_id] = signature.release
            write_json_atomic(self.state_file, {"format": 1, "releases": releases})


def read_release_state(path: Path) -> dict[str, int]:
    """Key id → newest accepted release, from a state file (missing: nothing accepted yet).

    Raises:
        BundleError: a state file that cannot be read or is not one (a device then refuses to
            guess: fix or remove it).
    """
    try:
        raw = Path(path).read_bytes()[: 1 << 20]
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise BundleError(f"{path}: cannot read the release state file ({e.strerror})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
        releases = data["releases"]
        ok = isinstance(releases, dict) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in releases.items()
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise BundleError(
            f'{path}: not a release state file (expected {{"format": 1, "releases": '
            "{key id: release}}); fix or remove it"
        )
    return dict(releases)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s ``.lock`` sibling where the OS offers ``flock``, so two
    processes recording releases do not lose one (elsewhere: atomic replace only)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _keys_from_argument(value: Any) -> list[Any]:
    if isinstance(value, (str, Path, bytes)):
        value = [value]  # one key file (or PEM bytes), not a sequence of characters
    try:
        given = list(value)
    except TypeError:
        kind = type(value).__name__
        raise InputError(f"trusted_keys must be a list of public key files, got {kind}") from None
    if not given:
        raise InputError(
            f"trusted_keys is empty: give at least one public key, or leave it out to use {TRUSTED_KEYS_ENV}"
        )
    return [load_public_key(k) for k in given]


def _keys_from_env() -> list[Any]:
    if TRUSTED_KEYS_ENV not in os.environ:
        return []
    value = os.environ[TRUSTED_KEYS_ENV]
    paths = [p.strip() for p in value.split(os.pathsep) if p.strip()]
    if not paths:
        raise InputError(
            f"{TRUSTED_KEYS_ENV} is set to {value!r}, which names no key file: set it to "
            f"public key files separated by {os.pathsep!r}, or unset it to accept unsigned "
            "bundles"
        )
    keys = []
    for p in paths:
        try:
            keys.append(load_public_key(p))
        except BundleError as e:
            raise BundleError(f"{TRUSTED_KEYS_ENV}: {e}") from None
    return keys


def _int_setting(text: str, name: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(f"{name} is {text!r}: expected a positive integer release number") from None


def _check_release(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_RELEASE:
        raise InputError(f"{name} must be a positive integer release number, got {value!r}")


def _read_signature(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes()[:65536].decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        raise BundleError(f"{path}: not a valid signature file") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: not a valid signature file")
    if data.get("format") != SIGNATURE_FORMAT:
        raise BundleError(
            f"{path}: signature format {data.get('format')!r}: this edge-vl reads format "
            f"{SIGNATURE_FORMAT} (with a release number); re-sign the bundle with "
            "`edge-vl sign`"
        )
    if data.get("algorithm") != ALGORITHM:
        raise BundleError(f"{path}: algorithm: expected {ALGORITHM!r}")
    if not isinstance(data.get("key_id"), str):
        raise BundleError(f"{path}: key_id: expected a string")
    release = data.get("release")
    if not isinstance(release, int) or isinstance(release, bool) or not 0 < release <= _MAX_RELEASE:
        raise BundleError(f"{path}: release: expected a positive integer")
    try:
        signature = base64.b64decode(str(data.get("signature")), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{path}: signature: not base64") from None
    return {"key_id": data["key_id"], "release": release, "signature": signature}


def describe_signature(root: Path) -> dict[str, Any] | None:
    """What ``signature.json`` claims (key id, release), unchecked, for ``edge-vl info``; None when
    the bundle is unsigned or the file is unreadable."""
    path = Path(root) / SIGNATURE_NAME
    if not path.is_file():
        return None
    try:
        record = _read_signature(path)
    except BundleError as e:
        return {"error": str(e)}
    return {"key_id": record["key_id"], "release": record["release"]}
