"""Adapter training with a frozen backbone, as a resumable loop, plus evaluation.

Only what :meth:`ArchitectureFamily.is_trainable` allows trains: inserted adapters, pooler,
token-type embeddings and the head. Optimiser and schedule follow the authors' recipe: AdamW
(β = 0.9/0.98, ε = 1e-8, weight decay 0.01 except on biases and norms), 10 % linear warm-up then
linear decay to 0, head learning rate × ``head_lr_mult``.

:class:`TrainLoop` owns every piece of training state (trainable weights, optimizer, schedule,
data order, random generators), so a checkpoint taken between two steps and restored in a new
process continues bit-for-bit like an uninterrupted run.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_vl.config import TrainConfig
from edge_vl.errors import Interrupted
from edge_vl.training.architectures.base import ArchitectureFamily
from edge_vl.training.encoded import EncodedData
from edge_vl.training.losses import task_loss
from edge_vl.training.parallel import Placement

CPU = Placement(torch.device("cpu"))


@dataclass
class TrainSummary:
    """What a training run did: its steps, epochs, and the mean loss of its last steps."""

    steps: int
    epochs: float
    final_loss: float


def make_optimizer(family: ArchitectureFamily, model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    config = config.for_family(family)
    assert config.lr is not None  # for_family filled it in
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = name.endswith("bias") or "norm" in name.lower()
        is_head = "classifier" in name
        groups.setdefault((no_decay, is_head), []).append(param)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "lr": config.lr * (config.head_lr_mult if is_head else 1.0),
            }
            for (no_decay, is_head), params in sorted(groups.items())
        ],
        betas=(0.9, 0.98),
        eps=1e-8,
    )


class TrainLoop:
    """Mini-batch training of the trainable parameters of ``model`` on ``data``.

    ``total_steps`` defaults to ``config.max_steps`` or ``ceil(epochs × steps per epoch)``. The
    data are reshuffled at every epoch boundary with a generator seeded by ``config.seed``.
    """

    def __init__(
        self,
        family: ArchitectureFamily,
        model: nn.Module,
        data: EncodedData,
        config: TrainConfig,
        *,
        total_steps: int | None = None,
        stop_after: int | None = None,
        placement: Placement = CPU,
    ):
        self.placement = placement
        model.to(placement.device)
        data = data.to(placement.device)  # cached features live where the training runs
        config = config.for_family(family)
        self.family, self.model, self.data, self.config = family, model, data, config
        self.forward = placement.wrap(FamilyForward(family, model))
        self.scaler = placement.grad_scaler()
        self.n = len(data)
        self.steps_per_epoch = math.ceil(self.n / config.batch_size)
        self.total_steps = (
            total_steps or config.max_steps or max(1, math.ceil(config.epochs * self.steps_per_epoch))
        )
        #: the run ends here; the LR schedule still spans ``total_steps`` (a search that stops after
        #: its warm-up trains that warm-up exactly as the full search would)
        self.last_step = self.total_steps if stop_after is None else min(self.total_steps, stop_after)
        # dropout; the same seed on every rank, so rank 0's checkpointed RNG state resumes them all
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = make_optimizer(family, model, config)
        self.loss_fn = task_loss(config.loss)
        warmup = max(1, int(self.total_steps * config.warmup_ratio))
        total = self.total_steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.step = 0
        self.order = torch.randperm(self.n, generator=self.generator)
        self.cursor = 0
        self.recent_losses: list[float] = []

    @property
    def epoch(self) -> int:
        """Index of the epoch the next step belongs to."""
        return self.step // self.steps_per_epoch

    @property
    def done(self) -> bool:
        return self.step >= self.last_step

    def next_batch(self) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's rows of the next mini-batch, and their share of the whole batch (every rank
        draws the same batch, so the steps are one process's). A rank left without a row (the
        epoch's last batch smaller than the number of processes) computes on a stand-in row with
        share 0: it still joins the gradient average, but adds nothing to it."""
        if self.cursor >= self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        index = self.order[self.cursor : self.cursor + self.config.batch_size]
        self.cursor += self.config.batch_size
        mine = self.placement.shard(index)
        if len(mine) == 0:
            return self.data.trimmed_batch(index[:1]), 0.0
        return self.data.trimmed_batch(mine), len(mine) / len(index)

    def train_step(self) -> float:
        """One optimizer step on the next mini-batch; returns its loss (averaged over the ranks)."""
        self.model.train()
        batch, share = self.next_batch()
        with self.placement.autocast():
            loss = self.loss_fn(self.forward(batch), batch["labels"])
        # DDP averages gradients over the ranks: weighting each rank's mean by its share of the rows
        # makes that the mean over the whole batch, as one process would compute it
        scaled = loss * (share * self.placement.world)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            scaled.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(scaled).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.schedule.step()
        self.step += 1
        value = self.placement.mean(float(loss.detach()) * share, share)  # the ranks' shares sum to 1
        self.recent_losses = [*self.recent_losses, value][-20:]
        return value

    def run(
        self,
        *,
        before_step: Callable[[TrainLoop], None] | None = None,
        after_step: Callable[[TrainLoop], None] | None = None,
        progress: bool = True,
        description: str = "fine-tune",
    ) -> TrainSummary:
        """Train until ``last_step``; hooks run around every step (the DAS search uses them).

        A hook may raise to stop early (e.g. on an interrupt); the loop's state is then still
        consistent at a step boundary and can be checkpointed.
        """
        from tqdm.auto import tqdm

        interactive = sys.stderr.isatty()
        progress = progress and self.placement.is_main  # rank 0 speaks for a multi-process build
        bar = tqdm(
            total=self.last_step,
            initial=self.step,
            desc=description,
            unit="step",
            disable=not (progress and interactive),
        )
        # without a terminal (logs, CI), a plain line at every tenth of the run instead of a bar
        log_every = max(1, self.last_step // 10) if progress and not interactive else 0
        started, first = time.perf_counter(), self.step
        try:
            while not self.done:
                if before_step:
                    before_step(self)
                self.train_step()
                if after_step:
                    after_step(self)
                bar.update(1)
                bar.set_postfix(loss=f"{self.mean_loss:.4f}")
                if log_every and (self.step % log_every == 0 or self.done):
                    rate = (self.step - first) / (time.perf_counter() - started)
                    print(
                        f"{description}: step {self.step}/{self.last_step}, loss {self.mean_loss:.4f}, "
                        f"{rate:.2f} steps/s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            bar.close()
        self.model.eval()
        return TrainSummary(
            steps=self.step, epochs=self.step / self.steps_per_epoch, final_loss=self.mean_loss
        )

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.recent_losses)) if self.recent_losses else float("nan")

    # -- checkpointing ----------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def save(self, directory: Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``weights.safetensors`` (trainable weights) and ``state.pt`` (optimizer, schedule,
        data order, generators; read back with ``weights_only=True``) into ``directory``."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(directory / "weights.safetensors"))
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "schedule": {k: v for k, v in self.schedule.state_dict().items() if k != "lr_lambdas"},
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "order": self.order,
                "step": self.step,
                "cursor": self.cursor,
                "recent_losses": self.recent_losses,
                "extra": extra or {},
            },
            directory / "state.pt",
        )

    def load(self, directory: Path) -> dict[str, Any]:
        """Restore what :meth:`save` wrote; returns its ``extra`` dict."""
        from safetensors.torch import load_file

        weights = load_file(str(directory / "weights.safetensors"))
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        state = torch.load(directory / "state.pt", weights_only=True, map_location=self.placement.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(
            {**state["schedule"], "lr_lambdas": [None] * len(self.optimizer.param_groups)}
        )
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        self.order, self.step, self.cursor = state["order"].cpu(), state["step"], state["cursor"]
        self.recent_losses = list(state["recent_losses"])
        return state["extra"]


class Checkpointer:
    """Saves a :class:`TrainLoop` (plus ``extra()`` state) every ``every`` steps and when
    ``should_stop()`` turns true on any rank — then every rank raises :class:`Interrupted`. Only rank
    0 writes. Saving goes to a sibling directory that is swapped in, so a kill never leaves a
    half-written checkpoint."""

    def __init__(
        self,
        directory: Path,
        *,
        every: int = 50,
        should_stop: Callable[[], bool] = lambda: False,
        extra: Callable[[], dict[str, Any]] = dict,
    ):
        self.directory, self.every, self.should_stop, self.extra = Path(directory), every, should_stop, extra

    def restore(self, loop: TrainLoop) -> dict[str, Any] | None:
        """Load the latest checkpoint into ``loop``; its extra state, or None if there is none."""
        old = self.directory.with_name(self.directory.name + ".old")
        if (
            loop.placement.is_main
            and not (self.directory / "state.pt").is_file()
            and (old / "state.pt").is_file()
        ):
            old.rename(self.directory)  # killed between the two renames of a save
        loop.placement.barrier()
        if not (self.directory / "state.pt").is_file():
            return None
        return loop.load(self.directory)

    def save(self, loop: TrainLoop) -> None:
        if not loop.placement.is_main:
            return
        tmp = self.directory.with_name(self.directory.name + ".tmp")
        old = self.directory.with_name(self.directory.name + ".old")
        shutil.rmtree(tmp, ignore_errors=True)
        loop.save(tmp, self.extra())
        if self.directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            self.directory.rename(old)
        tmp.rename(self.directory)
        shutil.rmtree(old, ignore_errors=True)

    def after_step(self, loop: TrainLoop) -> None:
        if loop.step % self.every == 0 or loop.done:
            self.save(loop)
        if loop.placement.any(self.should_stop()) and not loop.done:
            self.save(loop)
            raise Interrupted(
                f"stopped at step {loop.step}/{loop.last_step} after saving a checkpoint "
                f"in {self.directory}; rerun the same command to resume"
            )


def train(
    family: ArchitectureFamily,
    model: nn.Module,
    data: EncodedData,
    config: TrainConfig,
    *,
    progress: bool = True,
    description: str = "fine-tune",
) -> TrainSummary:
    """Train the trainable parameters on ``data`` in one go."""
    return TrainLoop(family, model, data, config).run(progress=progress, description=description)


class FamilyForward(nn.Module):
    """``family.forward(model, batch)`` as a module (what DistributedDataParallel wraps)."""

    def __init__(self, family: ArchitectureFamily, model: nn.Module):
        super().__init__()
        self.family, self.model = family, model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.family.forward(self.model, batch)


@torch.no_grad()
def predict_logits(
    family: ArchitectureFamily, model: nn.Module, data: EncodedData, batch_size: int = 64
) -> torch.Tensor:
    """Logits for every row of ``data`` in eval mode, on the model's device; returned on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    data = data.to(device)
    return torch.cat(
        [
            family.forward(model, data.trimmed_batch(slice(i, i + batch_size))).float().cpu()
            for i in range(0, len(data), batch_size)
        ]
    )


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())
