"""The bundle manifest's schema (format 2): the contract between the build machine and the device.

One definition, in frozen dataclasses: :func:`edge_vl.bundle.finalize_manifest` checks what a build
writes against it, and :func:`edge_vl.bundle.read_bundle` parses what a device reads with it
(:func:`edge_vl.schema.parse`: every field's type, ranges and cross-checks; an error names the
field). The build's records about itself (metrics, training, cost, skip plan, precision choice)
are :mod:`edge_vl.build_records`, typed too, so a renamed field shows up at every reader in the
type checker. Imports no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge_vl.build_records import Cost, DataInfo, Metrics, PrecisionChoice, SkipPlan, Training
from edge_vl.choices import HEAD_KINDS, PRECISIONS, RESAMPLE_NAMES
from edge_vl.schema import check

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
#: 2: ``manifest_sha256``, typed schema, every loaded file listed in ``files``
FORMAT_VERSION = 2
#: model inputs the runtime can feed: pixels, one value per text token, or which folded text
MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask", "token_type_ids", "text_index")
TEXT_INPUTS = frozenset(MODEL_INPUTS[1:4])
#: a build folds the text tower away when its data asks at most this many distinct texts
MAX_FOLDED_TEXTS = 5
_MAX_SIDE = 8192
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
class FoldedTexts:
    """The texts whose text-tower output the graph holds as constants (a task that asks one fixed
    question, or a few): it takes ``text_index``, a text's position here, instead of token ids. The
    device tokenizes a text and looks its ids up in ``token_ids``; any other text is refused."""

    texts: tuple[str, ...]
    #: each text's token ids as the bundle's tokenizer encodes them, padding left out
    token_ids: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        check(1 <= len(self.texts) <= MAX_FOLDED_TEXTS, f"texts must hold 1..{MAX_FOLDED_TEXTS} texts")
        check(len(self.token_ids) == len(self.texts), "token_ids must have one entry per text")
        check(len(set(self.token_ids)) == len(self.token_ids), "token_ids repeat a text")
        check(all(self.token_ids), "token_ids must not be empty")

    @property
    def length(self) -> int:
        """Tokens of the longest text: how long the folded graph's text part is."""
        return max(len(ids) for ids in self.token_ids)


@dataclass(frozen=True)
class ModelSpec:
    """The IR the runtime compiles, its inputs and outputs."""

    xml: str
    bin: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    text_buckets: tuple[TextBucket, ...] = ()
    #: set when the text tower was folded away (the graph takes ``text_index``)
    folded_texts: FoldedTexts | None = None

    def __post_init__(self) -> None:
        check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}")
        names = [spec.name for spec in self.inputs]
        check("pixel_values" in names, "inputs lack pixel_values")
        check(set(names) <= set(MODEL_INPUTS), f"inputs {names} include names the runtime cannot feed")
        check(len(set(names)) == len(names), "inputs repeat a name")
        check(len(self.outputs) == 1 and len(self.outputs[0].shape) == 2, "outputs must be one (N, labels)")
        folded = "text_index" in names
        check(folded == (self.folded_texts is not None), "text_index is an input iff folded_texts is set")
        check(not (folded and TEXT_INPUTS & set(names)), "a folded model takes no token inputs")
        check(not (folded and self.text_buckets), "a folded model has no text buckets")


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
        check(
            len(self.size) == 2 and all(1 <= s <= _MAX_SIDE for s in self.size),
            f"size must be [height, width] within 1..{_MAX_SIDE}",
        )
        check(self.resample in RESAMPLE_NAMES, f"resample must be one of {RESAMPLE_NAMES}")
        check(0 < self.rescale_factor <= 1, "rescale_factor must be in (0, 1]")
        check(len(self.mean) == 3 and len(self.std) == 3, "mean and std need one value per channel")
        check(all(s > 0 for s in self.std), "std values must be positive")
        check(
            len(self.background) == 3 and all(0 <= c <= 255 for c in self.background),
            "background must be three values in 0..255",
        )
        if self.shortest_edge is not None:
            check(
                max(self.size) <= self.shortest_edge <= _MAX_SIDE,
                "shortest_edge must be at least the crop size",
            )


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
        check(
            sorted(self.skipped + self.kept) == list(range(len(self.layers))),
            "skipped and kept must split the layers' indices",
        )


@dataclass(frozen=True)
class RuntimeInfo:
    """The runtime profiles (:mod:`edge_vl.runtime.profiles`) whose OpenVINO reads every IR file."""

    profiles: tuple[str, ...]
    max_opset: int


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling of the logits (:mod:`edge_vl.runtime.calibration`), fitted on the
    build's eval rows; ``ece_after`` is cross-fitted."""

    temperature: float
    rows: int
    ece_before: float
    ece_after: float

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature must be positive")


@dataclass(frozen=True)
class Abstention:
    """Below ``threshold`` (a calibrated score) the bundle says "not sure"; chosen for
    ``target_precision`` on the build's eval rows (``coverage`` and ``precision`` cross-fitted)."""

    target_precision: float
    threshold: float
    coverage: float | None = None
    precision: float | None = None

    def __post_init__(self) -> None:
        check(
            0 < self.target_precision <= 1 and 0 <= self.threshold <= 1, "precision and threshold in [0, 1]"
        )


@dataclass(frozen=True)
class Histogram:
    """Counts of a signal's reference values between inner bin edges (outer bins open)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        check(len(self.counts) == len(self.edges) + 1, "a histogram has one more count than edges")


@dataclass(frozen=True)
class ReferenceProfile:
    """What normal inputs and answers look like, from the build's eval rows
    (:func:`edge_vl.runtime.signals.reference_profile`): drift monitoring compares with it."""

    rows: int
    signals: dict[str, Histogram]
    labels: dict[str, int]
    abstain_rate: float = 0.0


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``. The device reads the typed sections it needs; the build records
    (``metrics``, ``training``, ``cost``, ``skip_plan``, ``precision_choice``, ``data``) are typed
    too, so every reader is checked by the type checker."""

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
    metrics: Metrics
    training: Training
    cost: Cost
    skip_plan: SkipPlan
    precision_choice: PrecisionChoice | None = None
    data: DataInfo | None = None
    calibration: Calibration | None = None
    abstention: Abstention | None = None
    reference: ReferenceProfile | None = None
    manifest_sha256: str = ""

    @property
    def shipped_accuracy(self) -> float:
        """The build's eval accuracy of the model this bundle ships: the torch model's for FP32 (the
        export matches it to the parity check), the converted candidate's for FP16 or INT8."""
        chosen = self.precision_choice.chosen_accuracy if self.precision_choice else None
        return self.metrics.eval_accuracy if chosen is None else chosen

    def __post_init__(self) -> None:
        for name in self.files:
            _check_relative(name, "files")
        needed = [self.model.xml, self.model.bin]
        needed += [f for b in self.model.text_buckets for f in (b.xml, b.bin)]
        if self.preprocessing.text is not None:
            needed.append(self.preprocessing.text.tokenizer)
        unlisted = [name for name in needed if name not in self.files]
        check(not unlisted, f"files does not list {unlisted}, which the runtime loads")
        takes_text = bool((TEXT_INPUTS | {"text_index"}) & {spec.name for spec in self.model.inputs})
        check(
            takes_text == (self.preprocessing.text is not None),
            "model.inputs and preprocessing.text disagree on whether the model takes text",
        )
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


def _check_relative(name: str, where: str) -> None:
    """A plain relative POSIX path: no absolute path, no empty, ``.`` or ``..`` segment, no backslash,
    not the manifest or the signature."""
    segments = name.split("/")
    check(
        bool(name)
        and "\\" not in name
        and "\x00" not in name
        and not any(part in ("", ".", "..") for part in segments)
        and segments[0] != "~"
        and name not in (MANIFEST_NAME, SIGNATURE_NAME),
        f"{where}: {name!r} is not a plain relative path inside the bundle",
    )
