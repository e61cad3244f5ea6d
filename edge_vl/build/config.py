"""What a build is asked to do: :class:`BuildConfig`, and the models users can name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_vl.adapters import AdapterConfig
from edge_vl.errors import ModelError
from edge_vl.finetune import TrainConfig
from edge_vl.losses import score_kind
from edge_vl.search import SearchConfig

#: models users can name instead of giving a directory: checkpoints in the source tree, kept out
#: of the wheel (devices install the wheel), so they resolve in editable installs from a checkout
NAMED_MODELS = {"edge-vl-mini": Path(__file__).parents[1] / "mini" / "checkpoint"}


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
            "--model <checkout>/edge_vl/mini/checkpoint"
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
    #: fp32, fp16 (weights), int8 (NNCF), or auto: the fastest within ``max_accuracy_drop`` of fp32
    precision: str = "fp32"
    #: accuracy (fraction) ``auto``/``int8`` may lose against fp32 on the eval data
    max_accuracy_drop: float = 0.01
    #: training rows used to calibrate INT8
    calibration_size: int = 300
    #: a target profile (:func:`edge_vl.bench.read_target_profile`): precision is chosen for it
    target_profile: dict[str, Any] | None = None
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
    #: fit training lengths to small data (:mod:`edge_vl.build.schedule`)
    adapt_schedule: bool = True
    #: what :func:`~edge_vl.build.schedule.adapt_schedule` changed (recorded in the manifest)
    schedule_changes: tuple[str, ...] = ()
    #: training lengths the user gave (``batch_size``, ``epochs``, ``das_turn``, ``search_epochs``):
    #: the small-data schedule keeps them as given (the CLI fills this from the command line)
    given: frozenset[str] = frozenset()

    @property
    def needs_search(self) -> bool:
        """Whether the skip plan may run the DAS search (no fixed skip set, not a count of 0)."""
        return self.skip_layers is None and self.skip_count != 0

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
        if self.flops_budget is not None and not 0 < self.flops_budget <= 1:
            raise ValueError(f"flops_budget must be a fraction in (0, 1], got {self.flops_budget}")
        from edge_vl.converters.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if any(int(b) < 2 for b in self.text_buckets):
            raise ValueError(
                f"text buckets must be lengths of at least 2 tokens, got {list(self.text_buckets)}"
            )
        if self.sign_release is not None and self.sign_key is None:
            raise ValueError("a release number is signed with the bundle: give --sign-key with --release")
        score_kind(self.train.loss)  # raises on an unknown loss name
        if not 0 < self.search_holdout < 1:
            raise ValueError(f"search_holdout must be in (0, 1), got {self.search_holdout}")
