"""How well do edge-vl-mini's *frozen* encoders match held-out emoji with their names, before any fusion?

    python -m examples.pretraining.probe_frozen --head mlp \
        --out examples/benchmarks/results/pretraining/frozen_probe_mlp.json

A dual-encoder probe on the cached encoder outputs of :mod:`pretrain_mini` (same data, split and
held-out protocol): the mean EfficientNet-Lite0 grid feature and MiniLM's mean-pooled caption, each
through a trainable head (``linear`` or a one-hidden-layer ``mlp``), trained with the contrastive
loss only (ALBEF's ITC, Li et al., 2021, §3.2). Held-out pairs are those of
:func:`pretrain_mini.evaluate`; a pair matches when its cosine similarity is above a threshold
chosen on the same kind of pairs from *training* concepts. Also reported: the ranking AUC and the
accuracy at the best threshold on the held-out pairs themselves (an upper bound, not a result).
It says what the frozen features carry about unseen concepts: the fusion stack's matching head is
a cross-encoder and can do better, but a much lower probe is a warning about the encoders or data.

``--train-blocks K`` also trains the last K blocks of EfficientNet-Lite0 (initialised from ImageNet,
batch-norm statistics kept) with the heads, from cached inputs of those blocks: does adapting the
top of the image encoder to emoji and icons help on *unseen* concepts?
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from edge_vl.fileio import write_text_atomic
from examples.benchmarks.recorded import this_command
from examples.pretraining import mini_data as data
from examples.pretraining.pretrain_mini import (
    DEFAULT_CACHE,
    EVAL_KINDS,
    Tensors,
    _picture_starts,
    encode_pictures,
    eval_pairs,
    save_atomic,
)


def pooled(tensors: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean image grid feature per picture, mean-pooled MiniLM state per caption)."""
    mask = tensors.mask.unsqueeze(-1).float()
    return tensors.image.float().mean(1), (tensors.states.float() * mask).sum(1) / mask.sum(1)


class TopBlocks(nn.Module):
    """The last ``k`` blocks of a model's EfficientNet-Lite0, trained from cached inputs; the output is
    the mean grid feature. Batch-norm layers stay in inference mode (ImageNet statistics)."""

    def __init__(self, model, k: int):
        super().__init__()
        self.first = len(model.vision_encoder._blocks) - k
        self.blocks = copy.deepcopy(model.vision_encoder._blocks[self.first :])
        self.train()  # keeps batch norm in inference mode from the start

    def train(self, mode: bool = True) -> TopBlocks:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        for block in self.blocks:
            x = block(x)
        return x.mean((2, 3))

    def inputs(self, model, concepts, cache: Path, echo=print) -> torch.Tensor:
        """The encoder's activations in front of these blocks for every picture (cached in ``cache``)."""
        from edge_vl.training.architectures.meter import MeterFamily

        spec = MeterFamily().image_spec(Path("."), model)
        pictures = [p for c in concepts for p in c.pictures]
        key = hashlib.sha256(json.dumps([[str(p) for p in pictures], str(spec), self.first]).encode())
        path = cache / f"blocks-{key.hexdigest()[:16]}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        encoder = model.vision_encoder.eval()

        def up_to_first(pixels: torch.Tensor) -> torch.Tensor:  # the trunk's forward, stopped early
            x = F.relu6(encoder._bn0(encoder._conv_stem(pixels)))
            for block in encoder._blocks[: self.first]:
                x = block(x)
            return x

        saved = encode_pictures(pictures, spec, up_to_first, echo)
        save_atomic(path, saved)
        return saved

    @torch.no_grad()
    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([self(inputs[i : i + 1024]) for i in range(0, len(inputs), 1024)])


def head(kind: str, d_in: int, dim: int = 256) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, dim)
    return nn.Sequential(nn.Linear(d_in, 1024), nn.GELU(), nn.Dropout(0.1), nn.Linear(1024, dim))


class Probe(nn.Module):
    def __init__(self, kind: str, image_dim: int, text_dim: int):
        super().__init__()
        self.image, self.text = head(kind, image_dim), head(kind, text_dim)
        self.log_temp = nn.Parameter(torch.tensor(0.07).log())

    def embed(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.image(image), dim=-1), F.normalize(self.text(text), dim=-1)


@torch.no_grad()
def pair_scores(probe: Probe, concepts, tensors: Tensors, image, text, hard: float):
    """Cosine similarities and match labels of :func:`pretrain_mini.evaluate`'s pairs."""
    probe.eval()
    sims, labels = [], []
    for pics, caps, match in eval_pairs(concepts, tensors, hard, min_pictures=2):  # two styles
        a, b = probe.embed(image[pics], text[caps])
        sims.append((a * b).sum(-1))
        labels.append(match)
    probe.train()
    return torch.cat(sims), torch.cat(labels)


def best_threshold(sims: torch.Tensor, labels: torch.Tensor) -> float:
    candidates = sims.sort().values[::5]
    accuracy = torch.stack([((sims > t).long() == labels).float().mean() for t in candidates])
    return float(candidates[accuracy.argmax()])


def run(args: argparse.Namespace, echo=print) -> dict:
    from edge_vl.training.mini import EdgeVLMiniConfig, EdgeVLMiniModel

    torch.manual_seed(args.seed)
    root = data.install(args.cache)
    train, held = data.split(data.emoji_concepts(root), data.icon_concepts(root, seed=0), seed=0)
    model = EdgeVLMiniModel(EdgeVLMiniConfig(num_labels=2))
    model.load_pretrained_encoders()  # the encoders pretrain_mini.py caches the outputs of
    train_t, held_t = Tensors(model, train, args.cache, echo), Tensors(model, held, args.cache, echo)
    (train_i, train_x), (held_i, held_x) = pooled(train_t), pooled(held_t)
    top = TopBlocks(model, args.train_blocks) if args.train_blocks else None
    if top is not None:  # image features from the trained blocks, standardised by their ImageNet start
        train_in, held_in = (
            top.inputs(model, train, args.cache, echo),
            top.inputs(model, held, args.cache, echo),
        )
        train_i = top.features(train_in)
    mean, std = train_i.mean(0), train_i.std(0) + 1e-5
    probe = Probe(args.head, train_i.shape[1], train_x.shape[1])
    groups = [{"params": list(probe.parameters()), "lr": 1e-3}]
    if top is not None:
        groups.append({"params": list(top.parameters()), "lr": args.block_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.05)
    rng, starts, started = random.Random(args.seed), _picture_starts(train), time.perf_counter()
    for step in range(1, args.steps + 1):
        chosen = rng.sample(range(len(train)), args.batch_size)
        pics = torch.tensor([starts[c] + rng.randrange(len(train[c].pictures)) for c in chosen])
        caps = train_t.caption_index[pics, torch.randint(0, train_t.n_captions, (args.batch_size,))]
        image = train_i[pics] if top is None else top.train()(train_in[pics])
        a, b = probe.embed((image - mean) / std, train_x[caps])
        sim = a @ b.T / probe.log_temp.exp().clamp(0.01, 0.5)
        target = torch.arange(args.batch_size)
        loss = (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 250 == 0:
            echo(f"step {step}/{args.steps}  itc {float(loss.detach()):.3f}")
    if top is not None:
        train_i, held_i = top.eval().features(train_in), top.features(held_in)
    train_i, held_i = (train_i - mean) / std, (held_i - mean) / std
    heldout = {}
    for name, hard in EVAL_KINDS:
        threshold = best_threshold(*pair_scores(probe, train, train_t, train_i, train_x, hard))
        sims, labels = pair_scores(probe, held, held_t, held_i, held_x, hard)
        pos, neg = sims[labels == 1], sims[labels == 0]
        heldout[name] = {
            "accuracy": round(float(((sims > threshold).long() == labels).float().mean()), 4),
            "auc": round(float((pos[:, None] > neg[None, :]).float().mean()), 4),
            "accuracy_at_best_heldout_threshold": round(
                float(((sims > best_threshold(sims, labels)).long() == labels).float().mean()), 4
            ),
        }
    return {"head": args.head, "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
            "train_blocks": args.train_blocks, "block_lr": args.block_lr if top is not None else None,
            "train": data.summary(train), "heldout_concepts": data.summary(held), "heldout": heldout,
            "seconds": round(time.perf_counter() - started)}  # fmt: skip


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--head", choices=("linear", "mlp"), default="mlp")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-blocks",
        type=int,
        default=0,
        choices=range(0, 17),
        metavar="K",
        help="also train EfficientNet-Lite0's last K blocks (0-16; default 0: frozen)",
    )
    p.add_argument("--block-lr", type=float, default=1e-4, help="learning rate of those blocks")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="as pretrain_mini.py's --cache")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write (default: print)")
    args = p.parse_args()
    result = run(args, echo=lambda line: print(line, file=sys.stderr, flush=True))  # stdout: the JSON only
    result["command"] = this_command()
    text = json.dumps(result, indent=1)
    if args.out is None:
        print(text)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, text + "\n")
    print(f"held-out: {json.dumps(result['heldout'])}; wrote {args.out}")


if __name__ == "__main__":
    main()
