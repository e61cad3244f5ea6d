"""Compute budgets: what a skip set costs, and how many layers to skip to meet a budget.

Costs are multiply-accumulates (MACs) of matmuls and convolutions, counted analytically per layer
by each family (:meth:`ArchitectureFamily.layer_costs`) — the convention of the paper's "FLOPs".
Norms, softmax and activations are not counted. The *full* model is the original
checkpoint without adapters: what a user would otherwise run.

Going beyond the paper (which sets k by hand), a build may give a FLOPs budget (fraction of the
full model's MACs) or a latency budget (milliseconds on this machine). The latency model is
measured, not assumed: the exported retained graph is timed with every layer kept and with every
layer skipped, and the difference is spread over the layers in proportion to their MAC savings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from edge_vl.errors import EdgeVLError


class BudgetError(EdgeVLError):
    """A compute budget cannot be met by skipping layers."""

    exit_code = 2


@dataclass(frozen=True)
class LayerCosts:
    """MACs of a model split by layer, for one input shape (batch 1)."""

    #: everything outside the layers (embeddings, pooler, head)
    base: int
    #: each layer's own layer
    layer: tuple[int, ...]
    #: each layer's PETL adapters (paid when the layer is kept)
    petl: tuple[int, ...]
    #: each layer's skip adapter (paid when the layer is skipped)
    skip: tuple[int, ...]

    @property
    def n_layers(self) -> int:
        return len(self.layer)

    def full(self) -> int:
        """The original model: every layer, no adapters."""
        return self.base + sum(self.layer)

    def retained(self, skipped: Sequence[int]) -> int:
        """The adapted model with ``skipped`` layers replaced by skip adapters."""
        s = set(skipped)
        return self.base + sum(
            self.skip[i] if i in s else self.layer[i] + self.petl[i] for i in range(self.n_layers)
        )

    def free(self, layers: Sequence[int]) -> LayerCosts:
        """These costs with ``layers`` costing nothing whether kept or skipped (a folded text tower)."""
        gone = set(layers)
        zero = lambda values: tuple(0 if i in gone else v for i, v in enumerate(values))  # noqa: E731
        return LayerCosts(self.base, zero(self.layer), zero(self.petl), zero(self.skip))

    def saving(self, i: int) -> int:
        """MACs saved by skipping layer ``i`` of the adapted model."""
        return self.layer[i] + self.petl[i] - self.skip[i]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LatencyModel:
    """Latency of a skip set, from two measured endpoints and the layers' MAC savings."""

    all_kept_ms: float
    all_skipped_ms: float
    costs: LayerCosts

    def predict(self, skipped: Sequence[int]) -> float:
        total = sum(self.costs.saving(i) for i in range(self.costs.n_layers)) or 1
        saved = sum(self.costs.saving(i) for i in skipped) / total
        return self.all_kept_ms - saved * (self.all_kept_ms - self.all_skipped_ms)


def min_layers_for(
    limit: float, cost: Callable[[Sequence[int]], float], savings: Sequence[float], what: str
) -> int:
    """Fewest layers to skip so that ``cost(skipped) <= limit``, skipping the biggest savers first.

    Raises:
        BudgetError: even skipping every layer but one does not meet ``limit``.
    """
    order = sorted(range(len(savings)), key=lambda i: -savings[i])
    for k in range(0, len(order)):
        if cost(order[:k]) <= limit:
            return k
    best = cost(order[:-1])
    raise BudgetError(
        f"{what} budget cannot be met: skipping {len(order) - 1} of {len(order)} layers still costs "
        f"{best:.4g}, the budget is {limit:.4g}"
    )


def select_within(
    ranking: Sequence[int], k: int, limit: float, cost: Callable[[Sequence[int]], float]
) -> list[int]:
    """The top-``k`` of ``ranking``, extended in ranking order until ``cost <= limit`` (layers of
    unequal cost may need more than k)."""
    chosen = list(ranking[:k])
    for layer in ranking[k:]:
        if cost(chosen) <= limit:
            break
        chosen.append(layer)
    return sorted(chosen)
