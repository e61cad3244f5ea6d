"""Where a build trains: one device (``--device``), optional mixed precision (``--amp``), and
data-parallel processes launched by ``torchrun`` (``torch.distributed``).

Under ``torchrun --nproc-per-node N -m edge_vl build …`` every process reads the same data, draws the
same batches and skip sets (same seeds) and trains on its share of each batch; gradients are averaged
by :class:`~torch.nn.parallel.DistributedDataParallel`, so N processes take the same optimizer steps
as one process on the whole batch. Held-out losses that score the DAS search's candidates are
averaged over the processes too, so every rank sees the same rewards and keeps the same gates. Only
rank 0 writes checkpoints and the bundle. NCCL on GPUs, gloo on CPUs; multi-node through torchrun's
own rendezvous options. Single-process builds use none of this.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from edge_vl.choices import AMP_MODES, check_choice


@dataclass(frozen=True)
class Placement:
    """The device, precision and rank of this training process."""

    device: torch.device
    amp: str = "off"
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def describe(self) -> str:
        amp = "" if self.amp == "off" else f", {self.amp} autocast"
        ranks = f", {self.world} processes (torch.distributed)" if self.distributed else ", 1 process"
        return f"training on {self.device}{amp}{ranks}"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the ``amp`` dtype on CUDA; a no-op otherwise (CPUs train in fp32)."""
        if self.amp == "off" or self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for fp16 autocast (bf16 needs none)."""
        return torch.amp.GradScaler("cuda") if self.amp == "fp16" and self.device.type == "cuda" else None

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's share of a batch's row indices (every rank draws the same batch)."""
        return index[self.rank :: self.world] if self.distributed else index

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel when there are several processes. Layers the DAS
        search skips in a step have no gradient in that step, hence ``find_unused_parameters``."""
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def mean(self, total: float, count: float) -> float:
        """``sum(total) / sum(count)`` over the ranks: a loss averaged over every rank's rows."""
        if not self.distributed:
            return total / count
        values = torch.tensor([total, float(count)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(values)
        return float(values[0] / values[1])

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (a stop request must stop every rank together)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self._comm_device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def same_everywhere(self, values: list[float]) -> bool:
        """Whether every rank holds exactly ``values`` (the gates after a bandit round)."""
        if not self.distributed:
            return True
        mine = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        return bool(torch.equal(low, high))

    def gather_rows(self, values: torch.Tensor, rows: int) -> torch.Tensor:
        """Every rank's per-row ``values`` of a batch of ``rows`` rows that :meth:`shard` split, in
        the batch's row order, on every rank."""
        if not self.distributed:
            return values
        width = -(-rows // self.world)  # the largest shard
        padded = torch.zeros(width, *values.shape[1:], dtype=values.dtype, device=self._comm_device)
        padded[: len(values)] = values.to(self._comm_device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        out = torch.empty(rows, *values.shape[1:], dtype=values.dtype, device=self._comm_device)
        for rank, part in enumerate(parts):
            out[rank :: self.world] = part[: len(range(rank, rows, self.world))]
        return out.to(values.device)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the CUDA device of this rank when CUDA is available, else the CPU; ``cuda`` alone
    means this rank's GPU under torchrun."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return device


def placement(device: str = "auto", amp: str = "off") -> Placement:
    """This process's :class:`Placement`; under torchrun (``WORLD_SIZE`` > 1) it also joins the
    process group (NCCL for CUDA, gloo for CPU) once."""
    check_choice(amp, AMP_MODES, "--amp")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Placement(device=resolved, amp=amp, rank=rank, world=world)
