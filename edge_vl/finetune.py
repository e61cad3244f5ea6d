"""Adapter fine-tuning with a frozen backbone, and evaluation (spec §4).

Only what :meth:`ArchitectureFamily.is_trainable` allows trains: inserted adapters, pooler,
token-type embeddings and the head. Optimiser and schedule follow the authors' recipe: AdamW
(β = 0.9/0.98, ε = 1e-8, weight decay 0.01 except on biases and norms), 10 % linear warm-up then
linear decay to 0, head learning rate × ``head_lr_mult``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_vl.architectures.base import ArchitectureFamily
from edge_vl.data import Example
from edge_vl.errors import DataError
from edge_vl.runtime.preprocess import preprocess_images
from edge_vl.runtime.tokenize import TextEncoder


@dataclass
class TrainConfig:
    """How adapters are trained."""

    epochs: float = 3.0
    #: stop after this many optimizer steps (overrides ``epochs`` when set)
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    head_lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainReport:
    steps: int
    epochs: float
    final_loss: float
    losses: list[float] = field(default_factory=list)


def encode_examples(
    examples: Sequence[Example],
    preprocessing: dict[str, Any],
    text_encoder: TextEncoder | None,
    labels: Sequence[str],
) -> dict[str, torch.Tensor]:
    """Preprocess every example once with the runtime's own code; returns named tensors + ``labels``."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = [ex for ex in examples if ex.label not in index]
    if unknown:
        ex = unknown[0]
        raise DataError(
            f"label {ex.label!r} does not occur in the training data (known labels: {sorted(index)})",
            path=ex.manifest or None,
            line=ex.line or None,
        )
    batch = {
        "pixel_values": torch.from_numpy(
            preprocess_images([ex.image for ex in examples], preprocessing["image"])
        )
    }
    if text_encoder is not None:
        batch.update(
            {k: torch.from_numpy(v) for k, v in text_encoder.encode([ex.text for ex in examples]).items()}
        )
    batch["labels"] = torch.tensor([index[ex.label] for ex in examples], dtype=torch.long)
    return batch


def make_optimizer(family: ArchitectureFamily, model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = name.endswith("bias") or "norm" in name.lower()
        is_head = any(p in name for p in family.trainable_patterns if p == "classifier")
        groups.setdefault((no_decay, is_head), []).append(param)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "lr": config.lr * (config.head_lr_mult if is_head else 1.0),
            }
            for (no_decay, is_head), params in groups.items()
        ],
        betas=(0.9, 0.98),
        eps=1e-8,
    )


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    family: ArchitectureFamily,
    model: nn.Module,
    data: dict[str, torch.Tensor],
    config: TrainConfig,
    *,
    progress: bool = True,
    description: str = "fine-tune",
) -> TrainReport:
    """Train the trainable parameters on ``data`` (from :func:`encode_examples`)."""
    from tqdm.auto import tqdm

    n = len(data["labels"])
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    optimizer = make_optimizer(family, model, config)
    schedule = linear_schedule(optimizer, total, config.warmup_ratio)
    model.train()
    losses: list[float] = []
    order = torch.randperm(n, generator=generator)
    cursor = 0
    bar = tqdm(total=total, desc=description, unit="step", disable=not progress, leave=False)
    for _ in range(total):
        if cursor >= n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        batch = {k: v[idx] for k, v in data.items()}
        loss = family.loss(family.forward(model, batch), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    model.eval()
    return TrainReport(
        steps=total, epochs=total / steps_per_epoch, final_loss=float(np.mean(losses[-20:])), losses=losses
    )


@torch.no_grad()
def predict_logits(
    family: ArchitectureFamily, model: nn.Module, data: dict[str, torch.Tensor], batch_size: int = 64
) -> torch.Tensor:
    """Logits for every row of ``data`` in eval mode."""
    model.eval()
    n = len(data["labels"])
    inputs = {k: v for k, v in data.items() if k != "labels"}
    return torch.cat(
        [
            family.forward(model, {k: v[i : i + batch_size] for k, v in inputs.items()})
            for i in range(0, n, batch_size)
        ]
    )


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())
