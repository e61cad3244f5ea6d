"""What a build is asked to do, with every default in one place: :class:`BuildConfig` and the
settings it holds — :class:`TrainConfig` (the fine-tune), :class:`SearchConfig` (the DAS search),
:class:`AdapterConfig` (adapter sizes) — and the models users can name. Imports no torch: the CLI
reads its option defaults here, and ``--help`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

from edge_vl.choices import BUILD_PRECISIONS, ESTIMATORS, LOSSES, SEARCH_MODES, check_choice
from edge_vl.errors import ModelError

#: held-out rows of the single-layer round when the ``prior`` estimator needs one and none is given
PRIOR_ROWS = 1000
#: the estimator of ``clean`` searches (``paper`` mode reads the gates, as the authors do): on the
#: demo the prior ranked fine-tuned skip sets better than the gates, at a third of the cost (README)
DEFAULT_ESTIMATOR = "prior"


class HasDefaultLr(Protocol):
    """What :meth:`TrainConfig.for_family` needs of an architecture family."""

    @property
    def default_lr(self) -> float: ...


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``cls`` (the CLI's option defaults)."""
    for f in fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


@dataclass(frozen=True)
class AdapterConfig:
    """Sizes of the inserted adapters, as fractions of the hidden size (the authors: PETL r = d/8)."""

    #: PETL adapter bottleneck = hidden_size * petl_ratio (the authors: r = d/8)
    petl_ratio: float = 1 / 8
    #: skip adapter bottleneck = hidden_size * skip_ratio (the authors: 2·d/8 for ViLT, 3·d/8 for METER)
    skip_ratio: float = 2 / 8
    #: initialisation std of the adapter Linear weights
    init_std: float = 0.02
    #: rank of low-rank updates of the attention's query and value projections (0: none). Not in the
    #: paper, whose adapters sit beside whole sub-layers: these let a frozen layer change what it
    #: attends to (edge-vl's families that support it: METER-style)
    attention_rank: int = 0
    #: rank of low-rank updates of the feed-forward block's two projections (0: none). Not in the
    #: paper either: they change the FFN's per-token transform itself, which a parallel adapter only
    #: adds to (edge-vl's families that support it: METER-style)
    ffn_rank: int = 0

    def petl_rank(self, hidden: int) -> int:
        return max(1, round(hidden * self.petl_ratio))

    def skip_rank(self, hidden: int) -> int:
        return max(1, round(hidden * self.skip_ratio))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class TrainConfig:
    """How adapters are trained."""

    epochs: float = 3.0
    #: stop after this many optimizer steps (overrides ``epochs`` when set)
    max_steps: int | None = None
    batch_size: int = 32
    #: adapter learning rate; None: the architecture family's ``default_lr``
    lr: float | None = None
    #: task loss, one of :data:`edge_vl.choices.LOSSES` (``vqa-bce`` is the paper's)
    loss: str = "cross-entropy"
    head_lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def for_family(self, family: HasDefaultLr) -> TrainConfig:
        """This config with the family's default learning rate filled in (when ``lr`` is None)."""
        return self if self.lr is not None else replace(self, lr=family.default_lr)


@dataclass
class SearchConfig:
    """DAS hyper-parameters (defaults: the authors' ``config.py``, "DAS setting")."""

    #: search length in epochs over the search's training split (epoch 0 is warm-up)
    epochs: int = 3
    #: epochs without gate updates at the start
    warmup_epochs: int = 1
    #: training micro-batches between two bandit rounds
    das_turn: int = 10
    #: distinct candidate skip sets scored per round
    das_step: int = 3
    #: gate learning rate η
    gate_lr: float = 1.0
    #: held-out batch size for rewards
    val_batch_size: int = 64
    mode: str = "clean"
    #: skip k sampled layers during warm-up as the paper does (None: only in ``paper`` mode)
    warmup_skipping: bool | None = None
    #: train the search on at most this many training rows (a seeded subset; None: all of them).
    #: Not in the paper: it bounds the search's cost on large datasets.
    max_rows: int | None = None
    #: what ranks the layers at the end (``ESTIMATORS``; None: ``DEFAULT_ESTIMATOR``, or the gates in
    #: ``paper`` mode — the paper reads the gates)
    estimator: str | None = None
    #: after the warm-up, score every layer skipped alone on ``prior_rows`` held-out rows (one extra
    #: round of single-layer candidates, used by the ``effects`` and ``prior`` estimators; None:
    #: ``PRIOR_ROWS`` for ``prior``, else no such round). Not in the paper.
    prior_rows: int | None = None

    def __post_init__(self) -> None:
        check_choice(self.mode, SEARCH_MODES, "search mode")
        if self.estimator is None:
            self.estimator = "gates" if self.mode == "paper" else DEFAULT_ESTIMATOR
        check_choice(self.estimator, ESTIMATORS, "search estimator")
        if self.prior_rows is None:
            self.prior_rows = PRIOR_ROWS if self.estimator == "prior" else 0
        if self.estimator == "prior" and (self.prior_rows < 1 or self.warmup_epochs < 1):
            raise ValueError(
                "the prior estimator scores layers after a warm-up on held-out rows: it needs "
                f"warmup_epochs ≥ 1 and prior_rows ≥ 1, got {self.warmup_epochs} and {self.prior_rows}"
            )
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"search max_rows must be at least 1, got {self.max_rows}")
        if self.epochs <= self.warmup_epochs:
            raise ValueError(
                f"search epochs ({self.epochs}) must exceed warm-up epochs ({self.warmup_epochs})"
            )

    @property
    def stops_after_warmup(self) -> bool:
        """The ``prior`` estimator needs no bandit rounds: the search ends with its prior round."""
        return self.estimator == "prior"

    @property
    def skips_in_warmup(self) -> bool:
        return self.mode == "paper" if self.warmup_skipping is None else self.warmup_skipping

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: models users can name instead of giving a directory: checkpoints in the source tree, kept out
#: of the wheel (devices install the wheel), so they resolve in editable installs from a checkout
NAMED_MODELS = {"edge-vl-mini": Path(__file__).parent / "training" / "mini" / "checkpoint"}


def model_source(model_dir: str | Path) -> str:
    """What the manifest records as the model's source: the name of a shipped model (which
    resolves on any machine), else the absolute checkpoint directory."""
    resolved = Path(model_dir).resolve()
    for name, shipped in NAMED_MODELS.items():
        if resolved == shipped.resolve():
            return name
    return str(resolved)


def resolve_model_dir(value: str | Path) -> Path:
    """A checkpoint directory, or the shipped checkpoint of a named model (``edge-vl-mini``)."""
    shipped = NAMED_MODELS.get(str(value))
    if shipped is None:
        return Path(value)
    if not (shipped / "config.json").is_file():
        raise ModelError(
            f"{value}: its checkpoint is not in this install ({shipped} has no config.json). It lives "
            "in edge-vl's source repository and is left out of the wheel so devices do not carry "
            'training weights: install from a checkout with pip install -e ".[build]", or pass '
            "--model <checkout>/edge_vl/training/mini/checkpoint"
        )
    return shipped


@dataclass
class BuildConfig:
    """Everything :func:`build` needs. Give at most one of ``skip_layers``, ``skip_count``,
    ``flops_budget``, ``latency_budget_ms``; with none, the search skips a third of the layers."""

    model_dir: Path
    train_data: Path
    eval_data: Path
    out: Path
    #: a fixed skip set (layer indices): no search
    skip_layers: Sequence[int] | None = None
    #: number of layers the search skips
    skip_count: int | None = None
    #: fraction of the full model's MACs the retained model may use
    flops_budget: float | None = None
    #: batch-1 latency (ms, this machine) the retained model may take
    latency_budget_ms: float | None = None
    search: SearchConfig = field(default_factory=SearchConfig)
    #: fraction of training rows held out to score search candidates
    search_holdout: float = 0.1
    train: TrainConfig = field(default_factory=TrainConfig)
    adapters: AdapterConfig | None = None
    overwrite: bool = False
    #: discard an unfinished build's checkpoints instead of resuming
    restart: bool = False
    checkpoint_every: int = 50
    progress: bool = True
    #: number of eval rows used for the torch↔OpenVINO parity check
    parity_samples: int = 8
    #: time the retained and the full exported model (batch 1) for the manifest and report
    measure_latency: bool = True
    #: fp16 (weights stored in half the bytes, computed in f32; fp32 is kept if they lose more than
    #: ``max_accuracy_drop``), fp32, int8 (NNCF), or auto: the fastest within ``max_accuracy_drop``
    precision: str = "fp16"
    #: accuracy (fraction) fp16, ``auto`` or ``int8`` may lose against fp32 on the eval data
    max_accuracy_drop: float = 0.01
    #: training rows used to calibrate INT8
    calibration_size: int = 300
    #: a target profile (:func:`edge_vl.bench.read_target_profile`): precision is chosen for it
    target_profile: dict[str, Any] | None = None
    #: square input size in pixels instead of the checkpoint's (fewer image tokens: less work in
    #: every layer that sees them); None: the checkpoint's
    image_size: int | None = None
    #: candidate square input sizes: with a FLOPs or latency budget, the compute plan
    #: (:mod:`edge_vl.pipeline.compute_plan`) chooses the size and the skip set together
    image_sizes: tuple[int, ...] = ()
    #: fold the text tower away when the training data asks few distinct texts (:mod:`edge_vl.folding`)
    fold_text: bool = True
    #: shorter text lengths to export too; the Predictor runs each input on the shortest that fits
    text_buckets: Sequence[int] = ()
    #: extra rows for the report's accuracy-vs-MACs comparison (see :mod:`edge_vl.report`)
    report_variants: Sequence[dict[str, Any]] = ()
    #: label → prompt text: classify images against the prompts' text embeddings (dual encoders
    #: such as CLIP); the device then runs the image tower only. Labels may be prompt-only.
    prompts: dict[str, str] | None = None
    #: the same from a template for every training label, e.g. ``"a photo of a {}"``
    prompt_template: str | None = None
    #: private key (``edge-vl keygen``) to sign the bundle with (:mod:`edge_vl.signing`)
    sign_key: Path | None = None
    #: the signed release number (None: the build time, see :mod:`edge_vl.signing`)
    sign_release: int | None = None
    #: where training runs: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``
    device: str = "auto"
    #: mixed precision of training on CUDA: ``off``, ``bf16``, ``fp16`` (with a gradient scaler)
    amp: str = "off"
    #: the precision the bundle's answers keep on the eval rows: below the calibrated score that
    #: reaches it, the bundle says "not sure" (:mod:`edge_vl.runtime.calibration`); 0: never
    target_precision: float = 0.99
    #: fit training lengths to small data (:mod:`edge_vl.pipeline.schedule`)
    adapt_schedule: bool = True
    #: what :func:`~edge_vl.pipeline.schedule.adapt_schedule` changed (recorded in the manifest)
    schedule_changes: tuple[str, ...] = ()
    #: training lengths the user gave (``batch_size``, ``epochs``, ``das_turn``, ``search_epochs``):
    #: the small-data schedule keeps them as given (the CLI fills this from the command line)
    given: frozenset[str] = frozenset()

    @property
    def needs_search(self) -> bool:
        """Whether the skip plan may run the DAS search (no fixed skip set, not a count of 0)."""
        return self.skip_layers is None and self.skip_count != 0

    def check_image_sizes(self) -> None:
        """``image_sizes`` needs a budget to choose by and excludes a fixed ``image_size``."""
        if not self.image_sizes:
            return
        if len(set(self.image_sizes)) < 2:
            raise ValueError(
                f"image sizes: give at least two distinct sizes to choose from, got {list(self.image_sizes)}"
            )
        if self.image_size is not None:
            raise ValueError(
                "give either image_size (one size) or image_sizes (sizes to choose from), not both"
            )
        if self.flops_budget is None and self.latency_budget_ms is None:
            raise ValueError(
                "image sizes are chosen to meet a budget: give flops_budget or latency_budget_ms with them"
            )
        if self.search.estimator != "prior":
            raise ValueError(
                "image sizes are scored with the prior estimator (each layer skipped alone after the "
                f"warm-up); got search estimator {self.search.estimator!r}"
            )

    def label_prompts(self, labels: Sequence[str]) -> dict[str, str] | None:
        """The prompt per label (``prompts`` entries win over ``prompt_template``), or None."""
        if self.prompts is None and self.prompt_template is None:
            return None
        template = self.prompt_template
        from_template = {label: template.replace("{}", label) for label in labels} if template else {}
        return {**from_template, **(self.prompts or {})}

    def __post_init__(self) -> None:
        self.model_dir = resolve_model_dir(self.model_dir)
        given = [
            n
            for n in ("skip_layers", "skip_count", "flops_budget", "latency_budget_ms")
            if getattr(self, n) is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of skip_layers, skip_count, flops_budget, latency_budget_ms; got {given}"
            )
        self.check_image_sizes()
        if self.flops_budget is not None and not 0 < self.flops_budget <= 1:
            raise ValueError(f"flops_budget must be a fraction in (0, 1], got {self.flops_budget}")
        check_choice(self.precision, BUILD_PRECISIONS, "precision")
        if any(int(b) < 2 for b in self.text_buckets):
            raise ValueError(
                f"text buckets must be lengths of at least 2 tokens, got {list(self.text_buckets)}"
            )
        if self.sign_release is not None and self.sign_key is None:
            raise ValueError("a release number is signed with the bundle: give --sign-key with --release")
        check_choice(self.train.loss, LOSSES, "loss")
        if not 0 <= self.target_precision <= 1:
            raise ValueError(
                f"target_precision must be within [0, 1] (0: never abstain), got {self.target_precision}"
            )
        if not 0 < self.search_holdout < 1:
            raise ValueError(f"search_holdout must be in (0, 1), got {self.search_holdout}")
