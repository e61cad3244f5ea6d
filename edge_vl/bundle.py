"""The bundle: one directory a device loads. Its manifest is a typed schema, verified on every load.

Layout (paths relative to the bundle directory)::

    manifest.json     the :class:`Manifest` below (sorted keys); ``files`` lists every other file
    signature.json    optional: an Ed25519 signature of manifest.json's bytes (:mod:`edge_vl.signing`)
    model.xml/.bin    OpenVINO IR of the retained subgraph
    tokenizer.json    the tokenizer the model was trained with (``tokenizers`` format)
    report.html/.json what the build measured, for people

The manifest is the contract between the build machine and the device: the build writes it
through :func:`finalize_manifest` (which parses it with this schema first, so an invalid manifest
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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edge_vl.errors import BundleError, IncompatibleBundleError
from edge_vl.fileio import write_json_atomic
from edge_vl.schema import SchemaError, check, parse, to_json

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
#: 2: ``manifest_sha256``, typed schema, every loaded file listed in ``files``
FORMAT_VERSION = 2
#: a manifest larger than this is not a manifest (protects the reader's memory)
MAX_MANIFEST_BYTES = 16 << 20
RESAMPLE_NAMES = ("nearest", "bilinear", "bicubic", "lanczos")
HEAD_KINDS = ("sigmoid", "softmax")
PRECISIONS = ("fp32", "fp16", "int8")
#: model inputs the runtime can feed: pixels, and one value per text token
MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask", "token_type_ids")
TEXT_INPUTS = frozenset(MODEL_INPUTS[1:])
_MAX_SIDE = 8192
_SHA256 = re.compile(r"[0-9a-f]{64}")


# -- the schema -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileEntry:
    """Size and sha256 of one bundle file."""

    sha256: str
    size: int

    def __post_init__(self) -> None:
        check(bool(_SHA256.fullmatch(self.sha256)), "sha256 must be 64 lower-case hex digits")
        check(self.size >= 0, "size must not be negative")


@dataclass(frozen=True)
class TensorSpec:
    """One named model input or output; ``shape`` uses -1 for the (dynamic) batch dimension."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        check(self.dtype in ("float32", "int64", "int32"), f"dtype {self.dtype!r} is not supported")
        check(len(self.shape) >= 1, "shape must not be empty")
        check(self.shape[0] == -1 or self.shape[0] >= 1, "the batch dimension must be -1 or positive")
        check(all(1 <= d <= 1 << 16 for d in self.shape[1:]), f"shape {list(self.shape)} is out of range")


@dataclass(frozen=True)
class TextBucket:
    """A shorter text length exported next to the full one (``edge-vl build --text-buckets``)."""

    length: int
    xml: str
    bin: str
    parity_max_abs: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """The IR the runtime compiles, its inputs and outputs."""

    xml: str
    bin: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    text_buckets: tuple[TextBucket, ...] = ()

    def __post_init__(self) -> None:
        check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}")
        names = [spec.name for spec in self.inputs]
        check("pixel_values" in names, "inputs lack pixel_values")
        check(set(names) <= set(MODEL_INPUTS), f"inputs {names} include names the runtime cannot feed")
        check(len(set(names)) == len(names), "inputs repeat a name")
        check(len(self.outputs) == 1 and len(self.outputs[0].shape) == 2, "outputs must be one (N, labels)")


@dataclass(frozen=True)
class ImageSpec:
    """Image preprocessing (:mod:`edge_vl.runtime.preprocess`): decode, RGB on ``background``,
    resize to ``size`` (or shortest edge then centre crop), rescale, normalise."""

    size: tuple[int, int]
    resample: str
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    background: tuple[int, int, int] = (255, 255, 255)
    shortest_edge: int | None = None

    def __post_init__(self) -> None:
        check(len(self.size) == 2 and all(1 <= s <= _MAX_SIDE for s in self.size),
              f"size must be [height, width] within 1..{_MAX_SIDE}")  # fmt: skip
        check(self.resample in RESAMPLE_NAMES, f"resample must be one of {RESAMPLE_NAMES}")
        check(0 < self.rescale_factor <= 1, "rescale_factor must be in (0, 1]")
        check(len(self.mean) == 3 and len(self.std) == 3, "mean and std need one value per channel")
        check(all(s > 0 for s in self.std), "std values must be positive")
        check(len(self.background) == 3 and all(0 <= c <= 255 for c in self.background),
              "background must be three values in 0..255")  # fmt: skip
        if self.shortest_edge is not None:
            check(max(self.size) <= self.shortest_edge <= _MAX_SIDE,
                  "shortest_edge must be at least the crop size")  # fmt: skip


@dataclass(frozen=True)
class TextSpec:
    """Tokenization (:mod:`edge_vl.runtime.tokenize`): the tokenizer file and the fixed length."""

    tokenizer: str
    max_length: int
    pad_id: int
    pad_token: str

    def __post_init__(self) -> None:
        check(2 <= self.max_length <= 4096, "max_length must be within 2..4096")
        check(self.pad_id >= 0, "pad_id must not be negative")


@dataclass(frozen=True)
class Preprocessing:
    image: ImageSpec
    #: None for image-only models (a prompt head)
    text: TextSpec | None = None


@dataclass(frozen=True)
class Head:
    """How logits become scores, and the label of each output."""

    kind: str
    labels: tuple[str, ...]
    #: label → prompt text (prompt heads)
    prompts: dict[str, str] | None = None

    def __post_init__(self) -> None:
        check(self.kind in HEAD_KINDS, f"kind must be one of {HEAD_KINDS}")
        check(len(self.labels) >= 1, "labels must not be empty")
        check(len(set(self.labels)) == len(self.labels), "labels repeat a name")


@dataclass(frozen=True)
class Architecture:
    """Which model family, its skippable layers (names, in search order), and which of them the
    retained model skips."""

    family: str
    model_type: str
    source: str
    layers: tuple[str, ...]
    skipped: tuple[int, ...]
    kept: tuple[int, ...]

    def __post_init__(self) -> None:
        check(sorted(self.skipped + self.kept) == list(range(len(self.layers))),
              "skipped and kept must split the layers' indices")  # fmt: skip


@dataclass(frozen=True)
class RuntimeInfo:
    """The runtime profiles (:mod:`edge_vl.runtime.profiles`) whose OpenVINO reads every IR file."""

    profiles: tuple[str, ...]
    max_opset: int


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``. The device reads the typed sections; ``metrics`` and the build records
    (``training``, ``cost``, ``skip_plan``, ``precision_choice``, ``data``) are for people and tools."""

    format_version: int
    edge_vl_version: str
    created: str
    versions: dict[str, str]
    runtime: RuntimeInfo
    architecture: Architecture
    model: ModelSpec
    preprocessing: Preprocessing
    head: Head
    files: dict[str, FileEntry]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    skip_plan: dict[str, Any] = field(default_factory=dict)
    precision_choice: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    manifest_sha256: str = ""

    def __post_init__(self) -> None:
        for name in self.files:
            _check_relative(name, "files")
        needed = [self.model.xml, self.model.bin]
        needed += [f for b in self.model.text_buckets for f in (b.xml, b.bin)]
        if self.preprocessing.text is not None:
            needed.append(self.preprocessing.text.tokenizer)
        unlisted = [name for name in needed if name not in self.files]
        check(not unlisted, f"files does not list {unlisted}, which the runtime loads")
        takes_text = bool(TEXT_INPUTS & {spec.name for spec in self.model.inputs})
        check(takes_text == (self.preprocessing.text is not None),
              "model.inputs and preprocessing.text disagree on whether the model takes text")  # fmt: skip
        width, n_labels = self.model.outputs[0].shape[1], len(self.head.labels)
        check(width == n_labels, f"the model outputs {width} scores but head.labels has {n_labels} labels")

    @property
    def labels(self) -> list[str]:
        return list(self.head.labels)

    def loaded_files(self) -> list[str]:
        """The files the runtime opens (IR files and the tokenizer)."""
        names = [self.model.xml, self.model.bin]
        names += [f for b in self.model.text_buckets for f in (b.xml, b.bin)]
        return names + ([self.preprocessing.text.tokenizer] if self.preprocessing.text else [])


# -- reading ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its directory, typed manifest, and the manifest as JSON (``data``)."""

    path: Path
    manifest: Manifest
    data: dict[str, Any]
    #: the key id (:func:`edge_vl.signing.key_id`) that signed the manifest, when checked
    signed_by: str | None = None

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
                if f.readinto(memoryview(data)) != size:
                    raise BundleError(f"{self.path}: file {name!r} changed while it was read")
        except OSError as e:
            raise BundleError(f"{self.path}: cannot read {name!r} ({e.strerror})") from e
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BundleError(f"{self.path}: file {name!r} was modified (sha256 does not match the manifest)")
        return data

    def verify_files(self, skip: Sequence[str] = ()) -> None:
        """Check the size and sha256 of every listed file except ``skip`` (read elsewhere)."""
        for name in sorted(self.manifest.files):
            if name not in skip:
                self.read_verified(name)


def read_bundle(
    path: str | Path, *, verify: bool = True, trusted_keys: Sequence[Any] | None = None
) -> Bundle:
    """Load and check a bundle directory (see the module docstring).

    Args:
        verify: also check every listed file's size and sha256 (the structure is always checked).
        trusted_keys: Ed25519 public keys (see :func:`edge_vl.signing.load_public_key`); when given,
            the manifest must carry a valid signature by one of them. None: the keys named by the
            ``EDGE_VL_TRUSTED_KEYS`` environment variable, if it is set.

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
    from edge_vl.signing import verify_signature  # torch-free; cryptography only when keys are given

    signed_by = verify_signature(root, raw, trusted_keys)
    data = _parse_json(raw, manifest_path)
    manifest = _parse_manifest(data, manifest_path)
    bundle = Bundle(path=root, manifest=manifest, data=data, signed_by=signed_by)
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


def _check_relative(name: str, where: str) -> None:
    """A plain relative POSIX path: no absolute path, no ``..``, no backslash, not the manifest."""
    parts = PurePosixPath(name).parts
    check(
        bool(name) and "\\" not in name and "\x00" not in name and not name.startswith("/")
        and ".." not in parts and "." not in parts and name not in (MANIFEST_NAME, SIGNATURE_NAME)
        and parts[0] != "~",
        f"{where}: {name!r} is not a plain relative path inside the bundle",
    )  # fmt: skip


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
def finalize_manifest(staging: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Hash every file in ``staging`` into ``files``, stamp the format version and
    ``manifest_sha256``, check the result against the schema, and write ``manifest.json``."""
    from edge_vl.fileio import sha256_file

    full = to_json(dict(manifest))
    full["format_version"] = FORMAT_VERSION
    full["files"] = {
        p.relative_to(staging).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST_NAME, SIGNATURE_NAME)
    }
    full.pop("manifest_sha256", None)
    full["manifest_sha256"] = manifest_digest(full)
    try:
        parse(Manifest, full)
    except SchemaError as e:  # a bug in the build, never a user's fault
        raise RuntimeError(f"internal error: the build made an invalid manifest ({e})") from e
    write_json_atomic(staging / MANIFEST_NAME, full)
    return full
