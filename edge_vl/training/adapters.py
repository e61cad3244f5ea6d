"""Bottleneck adapters and skippable layers, as in the authors' code (``Adapter_Layer``, DAS repository).

- :class:`BottleneckAdapter`: ``A(x) = s · W_up ReLU(W_down LN(x) + b_down) + b_up``; every Linear
  weight ~ N(0, 0.02²), biases 0, LN weight 1 / bias 0, ``s = 1``. ``W_up`` is *not* zero-initialised
  (as in the authors' code), so adapters are not the identity at init.
- :class:`SkippableLayer`: wraps one transformer layer (a skippable layer). When ``skipped`` it returns
  ``h + A_skip(h)`` and the layer's own weights and PETL adapters are bypassed; otherwise it runs
  the family's adapted forward (:meth:`forward_kept`). Families subclass it.

Every module edge-vl adds carries the attribute prefix :data:`PREFIX`, so "which weights are
ours?" is a plain name test (as peft does with its method prefixes).
"""

from __future__ import annotations

import torch
from torch import nn

from edge_vl.config import AdapterConfig

#: attribute-name prefix of every module edge-vl inserts into a model
PREFIX = "edgevl_"


class BottleneckAdapter(nn.Module):
    """``LN → Linear(d, r) → ReLU → Linear(r, d)``, returned without the residual."""

    def __init__(self, hidden: int, rank: int, *, init_std: float = 0.02, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.down = nn.Linear(hidden, rank)
        self.up = nn.Linear(rank, hidden)
        for linear in (self.down, self.up):
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(self.norm(x))))

    def macs(self, tokens: int) -> int:
        """Multiply-accumulates of the two projections over ``tokens`` tokens."""
        return 2 * tokens * self.down.in_features * self.down.out_features


class LowRankUpdate(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``base(x) + up(down(x))``; ``up`` starts
    at zero, so the layer computes exactly what it did before training (as LoRA does)."""

    def __init__(self, base: nn.Linear, rank: int, *, init_std: float = 0.02):
        super().__init__()
        self.base = base
        setattr(self, PREFIX + "down", nn.Linear(base.in_features, rank, bias=False))
        setattr(self, PREFIX + "up", nn.Linear(rank, base.out_features, bias=False))
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.up.weight)

    @property
    def down(self) -> nn.Linear:
        return getattr(self, PREFIX + "down")

    @property
    def up(self) -> nn.Linear:
        return getattr(self, PREFIX + "up")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.up(self.down(x))

    def macs(self, tokens: int) -> int:
        """Multiply-accumulates of the update over ``tokens`` tokens (the base is the layer's own)."""
        return tokens * self.down.out_features * (self.base.in_features + self.base.out_features)


class SkippableLayer(nn.Module):
    """A skippable layer: the original layer plus its PETL adapters, or — when skipped — a skip adapter.

    Subclasses implement :meth:`forward_kept` with the family's adapter placement and keep the
    wrapped layer's call signature and return type.
    """

    def __init__(self, layer: nn.Module, hidden: int, config: AdapterConfig):
        super().__init__()
        self.layer = layer
        setattr(
            self,
            PREFIX + "skip",
            BottleneckAdapter(hidden, config.skip_rank(hidden), init_std=config.init_std),
        )
        self.skipped = False

    @property
    def skip_adapter(self) -> BottleneckAdapter:
        return getattr(self, PREFIX + "skip")

    def add_petl_adapters(
        self, names: tuple[str, ...], hidden: int, config: AdapterConfig, *, eps: float
    ) -> None:
        """Create the parallel PETL adapters ``names`` (bottleneck ``config.petl_rank(hidden)``)."""
        for name in names:
            adapter = BottleneckAdapter(hidden, config.petl_rank(hidden), init_std=config.init_std, eps=eps)
            setattr(self, PREFIX + name, adapter)

    def adapter(self, name: str) -> BottleneckAdapter:
        """The PETL adapter ``name``."""
        return getattr(self, PREFIX + name)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if self.skipped:
            return self.wrap_output(hidden_states + self.skip_adapter(hidden_states))
        return self.forward_kept(hidden_states, *args, **kwargs)

    def forward_kept(self, hidden_states: torch.Tensor, *args, **kwargs):
        raise NotImplementedError

    def add_low_rank_updates(
        self, parent: nn.Module, names: tuple[str, ...], rank: int, init_std: float
    ) -> None:
        """Replace the ``nn.Linear`` children ``names`` of ``parent`` (inside the wrapped layer) by
        :class:`LowRankUpdate` s of ``rank``."""
        for name in names:
            setattr(parent, name, LowRankUpdate(getattr(parent, name), rank, init_std=init_std))

    def petl_adapters(self) -> list[nn.Module]:
        """The PETL adapters and low-rank updates used when the layer is kept (each has ``macs``)."""
        adapters = [
            m for n, m in self.named_children() if n.startswith(PREFIX) and m is not self.skip_adapter
        ]
        return adapters + [m for m in self.layer.modules() if isinstance(m, LowRankUpdate)]

    def wrap_output(self, hidden_states: torch.Tensor):
        """Package a hidden state the way the wrapped layer returns it (default: a 1-tuple)."""
        return (hidden_states,)
