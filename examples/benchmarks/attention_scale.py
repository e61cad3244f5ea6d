"""How sharp a fusion stack's attention can be: per fusion layer, the Frobenius norms of the query
and key weights and of ``W_qᵀ W_k`` (which scales the attention logits), for edge-vl-mini checkpoints.

    python examples/benchmarks/attention_scale.py --model shipped=edge-vl-mini --model random=random

``NAME=SPEC`` as in ``transfer.py`` (``random``: a freshly initialised fusion stack, seed 0).
Weights only; nothing is trained.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from edge_vl.build import resolve_model_dir

sys.path.insert(0, str(Path(__file__).parent))
from transfer import _named, checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=_named, action="append", required=True, help="NAME=SPEC (repeatable)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for name, spec in args.model:
            weights = load_file(str(resolve_model_dir(checkpoint(spec, Path(work))) / "model.safetensors"))
            layers = sorted({int(k.split(".")[1]) for k in weights if k.startswith("fusion.")})
            for i in layers:
                q = weights[f"fusion.{i}.attention.self.query.weight"].float()
                k = weights[f"fusion.{i}.attention.self.key.weight"].float()
                scale = (q.T @ k).norm()
                print(f"{name} layer {i}: |W_q| {q.norm():.1f} |W_k| {k.norm():.1f} |W_q^T W_k| {scale:.1f}")


if __name__ == "__main__":
    main()
