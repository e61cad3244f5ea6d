"""Downstream tasks for the benchmark scripts, written as edge-vl data manifests.

- ``easy-vqa``: the demo task (64×64 shape images, 13 answers; :mod:`edge_vl.demo`).
- ``digits``: questions about handwritten digits — scikit-learn's ``load_digits`` (1,797 real 8×8
  scans from UCI, shipped inside the scikit-learn wheel), drawn at 64×64, dark on white. Unlike
  easy-vqa and emoji: scanned grey-level handwriting, and questions about identity, parity,
  magnitude and a named digit, none about colour. 12 answers (the ten digits, yes, no). Images
  are split 75/25 by image, so test images are never seen in training.
- ``digits-fixed``: the same images, one row each, always asking "what digit is this?" (10
  answers): a task whose question is fixed and whose answer depends on the image alone, as many
  factory checks are (1,347 training rows, 450 test rows).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image

from edge_vl.data import Example, write_jsonl

TASKS = ("easy-vqa", "digits", "digits-fixed")
#: left in every data folder the benchmarks write; a non-empty folder without it is not ours to write to
OWN_MARK = ".edge-vl-benchmark-data"
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_task(
    task: str, out: Path, *, train_size: int | None = None, eval_size: int | None = None
) -> tuple[Path, Path]:
    """``(train.jsonl, eval.jsonl)`` of ``task`` in ``out`` (seeded subsets of the given sizes).

    Raises:
        SystemExit: ``out`` holds files a benchmark did not write (a ``--work`` pointing at a
            user's folder): their ``train.jsonl`` or ``images/`` would be overwritten or read.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    claim_data_folder(out)
    if task == "easy-vqa":
        from edge_vl.demo import write_easy_vqa_manifests

        return write_easy_vqa_manifests(out, train_size=train_size, eval_size=eval_size)
    questions = digit_questions if task == "digits" else fixed_question
    return write_digits(out, train_size=train_size, eval_size=eval_size, questions=questions)


def build_command(task: str, work: Path) -> list[str]:
    """``edge-vl build`` on ``task`` with edge-vl-mini, the demo's model: ``--demo`` for easy-vqa
    (its full setting), else the task's rows written to ``work/data-TASK`` and the build's defaults."""
    command = [sys.executable, "-m", "edge_vl", "build"]
    if task == "easy-vqa":
        return [*command, "--demo"]
    train, evals = write_task(task, data_folder(task, work))
    return [*command, "--data", str(train), "--eval-data", str(evals)]


def data_folder(task: str, work: Path) -> Path:
    """Where :func:`build_command` writes ``task``'s rows under ``work``."""
    return work.resolve() / f"data-{task}"


def claim_data_folder(out: Path) -> None:
    """Make ``out`` (or find it) as a benchmark's data folder, marked as ours; refuse a non-empty
    folder without the mark."""
    if out.is_dir() and any(out.iterdir()) and not (out / OWN_MARK).is_file():
        raise SystemExit(
            f"{out} holds files no edge-vl benchmark wrote (no {OWN_MARK}); give --work a new or empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / OWN_MARK).touch()


def digit_questions(digit: int, rng: random.Random) -> list[tuple[str, str]]:
    """(question, answer) pairs about one image of ``digit``; yes/no questions are balanced by
    asking about the true digit or another one at random."""
    other = rng.choice([d for d in range(10) if d != digit])
    named = digit if rng.random() < 0.5 else other
    larger = rng.choice([3, 4, 5, 6])
    return [
        ("what digit is this?", str(digit)),
        ("which number is written here?", str(digit)),
        ("is this digit even?", "yes" if digit % 2 == 0 else "no"),
        (f"is the digit larger than {NAMES[larger]}?", "yes" if digit > larger else "no"),
        (f"is this a {NAMES[named]}?", "yes" if digit == named else "no"),
    ]


def fixed_question(digit: int, rng: random.Random) -> list[tuple[str, str]]:
    """The one question of ``digits-fixed``: the answer depends on the image alone."""
    return [("what digit is this?", str(digit))]


def write_digits(
    out: Path,
    *,
    train_size: int | None = None,
    eval_size: int | None = None,
    seed: int = 0,
    questions=digit_questions,
) -> tuple[Path, Path]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    order = list(range(len(digits.images)))
    rng = random.Random(seed)
    rng.shuffle(order)
    cut = int(len(order) * 0.75)
    splits: dict[str, list[Example]] = {"train": [], "eval": []}
    for rank, i in enumerate(order):
        path = images_dir / f"{i}.png"
        if not path.is_file():
            pixels = (255 - digits.images[i] * 255 / 16).astype("uint8")  # 0..16 ink → dark on white
            Image.fromarray(pixels, "L").resize((64, 64), Image.Resampling.BICUBIC).save(path)
        split = "train" if rank < cut else "eval"
        for question, answer in questions(int(digits.target[i]), rng):
            splits[split].append(Example(image=path, text=question, label=answer))
    written = []
    for split, size in (("train", train_size), ("eval", eval_size)):
        rows = splits[split]
        if size is not None and size < len(rows):
            rows = random.Random(seed).sample(rows, size)
        written.append(write_jsonl(rows, out / f"{split}.jsonl"))
    return written[0], written[1]
