"""How sharp a fusion stack's attention is, and where its [CLS] token looks, for edge-vl-mini
checkpoints: per fusion layer, the Frobenius norms of the query and key weights and of
``W_qᵀ W_k`` (which scales the attention logits); with ``--task``, also the share of [CLS]'s
attention that goes to the image tokens and the entropy of that attention (nats, mean over heads
and rows) on that task's test questions.

    python -m examples.benchmarks.attention_scale --model shipped=edge-vl-mini --model random=random \\
        --task digits

``NAME=SPEC`` as in ``transfer.py`` (``random``: a freshly initialised fusion stack, seed 0).
Nothing is trained: a frozen stack whose [CLS] barely attends to the picture gives adapters little
to work with.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from edge_vl.config import resolve_model_dir
from examples.benchmarks.tasks import TASKS, write_task
from examples.benchmarks.transfer import _named, checkpoint


def weight_scale(model_dir: Path) -> list[str]:
    """One line per fusion layer: query, key and ``W_qᵀ W_k`` norms."""
    weights = load_file(str(model_dir / "model.safetensors"))
    layers = sorted({int(k.split(".")[1]) for k in weights if k.startswith("fusion.")})
    lines = []
    for i in layers:
        q = weights[f"fusion.{i}.attention.self.query.weight"].float()
        k = weights[f"fusion.{i}.attention.self.key.weight"].float()
        scale = (q.T @ k).norm()
        lines.append(f"layer {i}: |W_q| {q.norm():.1f} |W_k| {k.norm():.1f} |W_q^T W_k| {scale:.1f}")
    return lines


@torch.no_grad()
def cls_attention(model_dir: Path, task: str, work: Path, rows: int) -> list[str]:
    """One line per fusion layer: [CLS]'s attention share on image tokens and its entropy, over
    the first ``rows`` test questions of ``task``."""
    from edge_vl.data import read_examples
    from edge_vl.manifest import TextSpec
    from edge_vl.runtime.preprocess import preprocess_image
    from edge_vl.runtime.tokenize import TextEncoder
    from edge_vl.training.architectures.meter import MeterFamily
    from edge_vl.training.mini import EdgeVLMiniModel

    model = EdgeVLMiniModel.from_pretrained(model_dir, attention="eager").eval()
    family = MeterFamily()
    _, evals = write_task(task, work / task, eval_size=rows)
    examples = read_examples(evals, check_images=False)[:rows]
    spec = family.image_spec(model_dir, model)
    pixels = torch.stack([torch.from_numpy(preprocess_image(e.image, spec)) for e in examples])
    text_spec = TextSpec("tokenizer.json", model.config.max_text_length, 0, "[PAD]")
    enc = TextEncoder.from_spec(family.tokenizer_dir(model_dir), text_spec).encode([e.text for e in examples])
    n_text = enc["input_ids"].shape[1]
    captured: dict[int, torch.Tensor] = {}

    def keep(i: int):
        return lambda _module, _inputs, output: captured.__setitem__(i, output[1][:, :, 0])

    hooks = [layer.attention.self.register_forward_hook(keep(i)) for i, layer in enumerate(model.fusion)]
    try:
        model.fuse(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"]), pixels)
    finally:
        for hook in hooks:
            hook.remove()
    lines = []
    for i, probs in sorted(captured.items()):  # (rows, heads, tokens): [CLS]'s attention
        image_share = probs[..., n_text:].sum(-1).mean()
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
        lines.append(f"layer {i}: [CLS] attention on the image {image_share:.2f}, entropy {entropy:.2f}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=_named, action="append", required=True, help="NAME=SPEC (repeatable)")
    p.add_argument("--task", choices=TASKS, default=None, help="also measure [CLS]'s attention on this task")
    p.add_argument("--rows", type=int, default=256, help="test questions for --task")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, spec in args.model:
            model_dir = resolve_model_dir(checkpoint(spec, work / "checkpoints"))
            lines = weight_scale(model_dir)
            if args.task:
                lines = [f"{a}; {b.split(': ', 1)[1]}" for a, b in zip(
                    lines, cls_attention(model_dir, args.task, work, args.rows), strict=True)]  # fmt: skip
            print("\n".join(f"{name} {line}" for line in lines))


if __name__ == "__main__":
    main()
