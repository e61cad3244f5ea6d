"""Shared fixtures: a tiny random ViLT checkpoint, a small synthetic shapes dataset, and a bundle
built from them with the CLI. Everything is made in code and seeded; nothing is downloaded."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}
SHAPES = ("circle", "rectangle")
VOCAB = "what color is the shape ? which does image contain a circle rectangle red blue green".split()  # noqa: SIM905
SKIP = [1, 3]


def _draw(path: Path, shape: str, color: str, size: int, rng: random.Random) -> None:
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    m = rng.randint(4, size // 4)
    box = (m, m, size - m, size - m)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLORS[color])
    im.save(path)


def make_shapes_dataset(root: Path, n_images: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """Images of one coloured shape each, with 'what color…' / 'what shape…' questions."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        shape, color = rng.choice(SHAPES), rng.choice(sorted(COLORS))
        size = rng.choice([40, 48, 64])
        rel = f"images/{i}.png"
        _draw(root / rel, shape, color, size, rng)
        rows.append({"image": rel, "text": "what color is the shape?", "label": color})
        rows.append({"image": rel, "text": "which shape does the image contain?", "label": shape})
    rng.shuffle(rows)
    cut = int(len(rows) * 0.75)
    train, evals = root / "train.jsonl", root / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:cut]))
    evals.write_text("".join(json.dumps(r) + "\n" for r in rows[cut:]))
    return train, evals


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> tuple[Path, Path]:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from edge_vl.training.architectures import family_for
    from edge_vl.training.architectures.quiet import quiet_transformers

    out = tmp_path_factory.mktemp("tiny-vilt")
    with quiet_transformers():
        family_for("vilt").random_checkpoint(out, vocab=VOCAB, labels=["x", "y"], preset="tiny", seed=0)
    return out


def build_args(checkpoint: Path, data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return [
        "build",
        "--model",
        str(checkpoint),
        "--data",
        str(data[0]),
        "--eval-data",
        str(data[1]),
        "--out",
        str(out),
        "--max-steps",
        "6",
        "--batch-size",
        "8",
        "--quiet",
        "--fixed-schedule",  # the tiny test sets are small data: keep the lengths each test gives
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint, shapes_data) -> Path:
    """A bundle built through the CLI with layers 1 and 3 skipped (FP16 weights, the default)."""
    return _tiny_build(tmp_path_factory, tiny_checkpoint, shapes_data, "tiny")


@pytest.fixture(scope="session")
def tiny_fp32_bundle(tmp_path_factory, tiny_checkpoint, shapes_data) -> Path:
    """The same build with FP32 weights, for what converts them (the precision script)."""
    return _tiny_build(tmp_path_factory, tiny_checkpoint, shapes_data, "tiny-fp32", "--precision", "fp32")


def _tiny_build(tmp_path_factory, checkpoint: Path, data: tuple[Path, Path], name: str, *extra: str) -> Path:
    from edge_vl.cli import cli

    out = tmp_path_factory.mktemp("bundles") / name
    result = CliRunner().invoke(cli, build_args(checkpoint, data, out, "--skip-layers", "1,3", *extra))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def sample(shapes_data) -> tuple[Path, str]:
    """(image path, question) of the first eval row of the shapes dataset."""
    row = json.loads(shapes_data[1].read_text().splitlines()[0])
    return shapes_data[1].parent / row["image"], row["text"]
