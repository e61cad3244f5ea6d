"""What a build records about itself in the manifest: metrics, latency, cost, the skip plan (search
and input sizes), training, data checks and the precision choice.

Typed like the device contract (:mod:`edge_vl.manifest`, which holds them) and parsed with it by
:func:`edge_vl.schema.parse`; the device reads none of them to answer. Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_vl.budget import LayerCosts
from edge_vl.schema import check

#: the confusion matrix is recorded for at most this many labels
MAX_CONFUSION_LABELS = 50
#: how a skip plan was made (:class:`SkipPlan`)
SKIP_METHODS = ("given", "budget", "das", "das-undecided")


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
    and the one it chose: the lowest estimated held-out loss."""

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

    @property
    def decided(self) -> bool:
        """Whether the held-out rows set the chosen size apart from every other feasible size (its
        estimated loss lower by more than two standard errors). If not, the choice is a bet."""
        return self.doubt() is None

    def doubt(self) -> str | None:
        """Why the choice is a bet, not a finding (None: the rows separate it from every other size)."""
        scored = [c for c in self.candidates if c.feasible and c.estimated_loss is not None]
        chosen = next(c for c in scored if c.size == self.chosen)
        loss = chosen.estimated_loss or 0.0

        def noise(c: SizeCandidate) -> float:
            return 2 * math.hypot(c.loss_se or 0.0, chosen.loss_se or 0.0)

        close = [c for c in scored if c is not chosen and (c.estimated_loss or 0.0) <= loss + noise(c)]
        if not close:
            return None
        other = min(close, key=lambda c: c.estimated_loss or 0.0)
        return (
            f"the held-out rows cannot tell {chosen.size} px (estimated loss {loss:.4f}) from "
            f"{other.size} px ({other.estimated_loss:.4f}), a difference within two standard errors, so "
            f"{chosen.size} px is a bet, not a finding (compare with --image-size {other.size}, or give more "
            "data)"
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
