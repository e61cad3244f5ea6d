"""The bundle manifest's schema (format 2): the contract between the build machine and the device.

One definition, in frozen dataclasses: :func:`edge_vl.bundle.finalize_manifest` checks what a build
writes against it, and :func:`edge_vl.bundle.read_bundle` parses what a device reads with it
(:func:`edge_vl.schema.parse`: every field's type, ranges and cross-checks; an error names the
field). The build records (metrics, training, cost, skip plan) are typed too, so a renamed field
shows up at every reader in the type checker. Imports no torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_vl.budget import LayerCosts
from edge_vl.choices import HEAD_KINDS, PRECISIONS, RESAMPLE_NAMES
from edge_vl.schema import check

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
#: 2: ``manifest_sha256``, typed schema, every loaded file listed in ``files``
FORMAT_VERSION = 2
#: the confusion matrix is recorded for at most this many labels
MAX_CONFUSION_LABELS = 50
#: how a skip plan was made (:class:`SkipPlan`)
SKIP_METHODS = ("given", "budget", "das", "das-undecided")
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
class Latency:
    """Batch-1 latency measured where the bundle was built (ms)."""

    retained: float
    full: float
    batch: int = 1
    threads: int | None = None
    #: precision of the retained model (the full model is timed in fp32)
    precision: str | None = None
    #: the full model's image size (height, width): the checkpoint's own, what a user would
    #: otherwise run (None: bundles built before it was recorded timed it at the bundle's size)
    full_image_size: tuple[int, int] | None = None

    @property
    def full_model(self) -> str:
        """What the full model's time is of, for a reader."""
        return full_model_words(self.full_image_size)


def full_model_words(image_size: Sequence[int] | None) -> str:
    """``full model (no layer skipped[, H×W px])``: the baseline a bundle's latency is compared with."""
    size = f", {image_size[0]}×{image_size[1]} px" if image_size else ""
    return f"full model (no layer skipped{size})"


@dataclass(frozen=True)
class Metrics:
    """What the build measured on the bundle."""

    eval_accuracy: float
    eval_examples: int
    #: always answering the most frequent training label: the floor any model must beat
    majority_accuracy: float | None = None
    train_examples: int | None = None
    parity_max_abs: float | None = None
    parity_samples: int | None = None
    latency_ms: Latency | None = None
    #: confusion[i][j]: eval rows of label i answered j (labels in ``head.labels`` order; up to
    #: :data:`MAX_CONFUSION_LABELS` labels)
    confusion: tuple[tuple[int, ...], ...] | None = None
    #: (share of eval rows answered, accuracy on them) when only the most confident are answered
    coverage_curve: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class Cost:
    """MACs of the full and the retained model (batch 1), and per layer."""

    unit: str
    full_model: float
    retained_model: float
    retained_fraction: float
    #: :class:`edge_vl.budget.LayerCosts` (None in manifests from before per-layer costs)
    per_layer: LayerCosts | None = None


@dataclass(frozen=True)
class Boundary:
    """The last layer a pick skips against the first it keeps: their held-out loss gap."""

    picked_layer: int
    kept_layer: int
    gap: float
    interval: tuple[float, float]


@dataclass(frozen=True)
class Uncertainty:
    """How sure the prior search's pick is (:func:`edge_vl.training.search.prior_uncertainty`)."""

    rows: int
    resamples: int
    k: int
    decided: bool
    pick_frequency: float
    boundary: Boundary | None = None


@dataclass(frozen=True)
class SearchRecord:
    """What a DAS search did and found (``skip_plan.search``)."""

    k: int
    skipped: tuple[int, ...]
    gates: tuple[float, ...]
    ranking: tuple[int, ...]
    #: the bandit's rounds and the prior round, as recorded (free-form per round kind)
    rounds: tuple[dict[str, Any], ...] = ()
    steps: int = 0
    #: rows the search trained on and scored candidates on
    train_rows: int = 0
    val_rows: int = 0
    #: each layer's estimated added held-out loss when skipped
    effects: tuple[float, ...] | None = None
    #: what ranked the layers (:data:`edge_vl.choices.ESTIMATORS`) and its per-layer score, higher:
    #: more redundant
    estimator: str = "gates"
    redundancy: tuple[float, ...] | None = None
    #: the training loss of every search step
    losses: tuple[float, ...] = ()
    uncertainty: Uncertainty | None = None

    @property
    def decided(self) -> bool:
        """Whether the pick is supported by its data: the prior's boundary separated, or (other
        estimators) scores that are not all equal."""
        if self.uncertainty is not None:
            return self.uncertainty.decided
        return self.redundancy is None or len(set(self.redundancy)) > 1

    @property
    def scores(self) -> tuple[float, ...]:
        """The estimator's per-layer score (manifests before estimators: the gates)."""
        return self.redundancy or self.gates


@dataclass(frozen=True)
class SizeCandidate:
    """One input size the compute plan scored: the skip set that meets the budget there, its cost,
    and the held-out loss estimated for it (``feasible`` False: no skip set meets the budget)."""

    size: int
    feasible: bool
    skipped: tuple[int, ...] = ()
    #: the budget's unit: MACs (``flops``) or milliseconds (``latency``)
    cost: float | None = None
    #: held-out loss with nothing skipped after the warm-up at this size, and its standard error
    base_loss: float | None = None
    loss_se: float | None = None
    #: ``base_loss`` plus each skipped layer's increase when skipped alone
    estimated_loss: float | None = None
    #: (cost, estimated loss) of skipping the 0, 1, 2, ... layers of least increase at this size
    frontier: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class SizePlan:
    """The compute plan's choice among input sizes (``--image-sizes``): every candidate it scored
    and the one it chose: the cheapest whose estimated held-out loss is within noise of the lowest."""

    chosen: int
    candidates: tuple[SizeCandidate, ...]
    #: ``flops`` (cost in MACs) or ``latency`` (cost in ms)
    kind: str
    #: the budget: a fraction of ``full_model_macs`` (flops) or milliseconds (latency)
    limit: float
    #: MACs of the full model at the checkpoint's own input size
    full_model_macs: float

    def __post_init__(self) -> None:
        check(self.kind in ("flops", "latency"), "kind must be 'flops' or 'latency'")
        check(
            any(c.size == self.chosen and c.feasible for c in self.candidates),
            "chosen must be a feasible candidate",
        )


@dataclass(frozen=True)
class SkipPlan:
    """Which layers the retained model skips and why: ``given`` by the user, met by the ``budget``
    without skipping, or chosen by the search (``das``; ``das-undecided`` when its data did not
    separate the pick)."""

    method: str
    skipped: tuple[int, ...]
    budget: dict[str, Any] | None = None
    search: SearchRecord | None = None
    search_config: dict[str, Any] | None = None
    search_seconds: float | None = None
    #: the input size chosen with the skip set (``--image-sizes``); None: one size was given
    sizes: SizePlan | None = None

    def __post_init__(self) -> None:
        check(self.method in SKIP_METHODS, f"method must be one of {SKIP_METHODS}")


@dataclass(frozen=True)
class Training:
    """How the adapters were trained (the fine-tune's settings and what it did)."""

    epochs: float
    batch_size: int
    lr: float | None
    loss: str
    seed: int
    steps: int
    final_loss: float
    trainable_parameters: int
    total_parameters: int
    trainable_fraction: float
    max_steps: int | None = None
    head_lr_mult: float | None = None
    weight_decay: float | None = None
    warmup_ratio: float | None = None
    adapters: dict[str, Any] | None = None
    #: what the small-data schedule changed
    schedule_changes: tuple[str, ...] = ()
    train_data: str | None = None
    eval_data: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class DataInfo:
    """What the data check found worth a look, and the eval data's fingerprint (rows and image
    bytes: :func:`edge_vl.data.data_fingerprint`), so ``edge-vl eval`` can tell the same data."""

    warnings: tuple[str, ...] = ()
    eval_fingerprint: str | None = None


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
class PrecisionCandidate:
    """One precision the build exported and measured: OpenVINO's answers on the eval rows and its
    batch-1 latency (here, or predicted for the target machine)."""

    precision: str
    accuracy: float
    #: share of eval rows whose top-1 answer equals the FP32 model's
    agreement_with_fp32: float
    latency_ms: float
    size_bytes: int


@dataclass(frozen=True)
class PrecisionTarget:
    """The machine a precision was chosen for (``--target-profile``)."""

    cpu: str | None = None
    #: per precision: latency there / latency here, from the two machines' reference graphs
    latency_scale: dict[str, float] | None = None


@dataclass(frozen=True)
class PrecisionChoice:
    """How the build chose the shipped model's precision (any ``--precision`` but ``fp32``)."""

    requested: str
    chosen: str
    reason: str
    max_accuracy_drop: float
    vnni: bool
    candidates: tuple[PrecisionCandidate, ...]
    target: PrecisionTarget | None = None

    @property
    def chosen_accuracy(self) -> float | None:
        """The shipped model's accuracy on the eval rows as OpenVINO answered them in the build."""
        return next((c.accuracy for c in self.candidates if c.precision == self.chosen), None)


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
