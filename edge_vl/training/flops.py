"""Counting MACs with torch's own FLOP counter: the independent check of the analytic per-layer
counts (:class:`edge_vl.budget.LayerCosts`) that the budgets and reports use."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path


def counted_macs(forward: Callable[[], object]) -> float:
    """MACs of one call of ``forward`` as torch's ``FlopCounterMode`` counts them (half its FLOPs):
    the independent check of the analytic counts. The counter misses attention computed by SDPA
    kernels, so compare on a model loaded with eager attention (:func:`with_eager_attention`)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        forward()
    return counter.get_total_flops() / 2


def with_eager_attention(checkpoint: Path, out_dir: Path) -> Path:
    """A copy of ``checkpoint`` whose config asks for eager (matmul) attention, for :func:`counted_macs`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in Path(checkpoint).iterdir():
        if f.is_file():
            shutil.copyfile(f, out_dir / f.name)
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    config.update(attention="eager", attn_implementation="eager")
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out_dir
