"""The demo task, easy-vqa (PyPI package ``easy-vqa``: 64×64 shape images, 13 answers), as JSONL manifests.

This is also the worked example of bringing your own data: all edge-vl needs is rows of
``{"image": path, "text": question, "label": answer}``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from edge_vl.data import Example, write_jsonl
from edge_vl.errors import MissingExtraError


@dataclass(frozen=True)
class DemoSettings:
    """What ``edge-vl build --demo`` (and ``--quick``) run: data sizes and training lengths. Options
    the user gives on the command line override these."""

    #: training questions drawn from easy-vqa's train split (None: all 38,575)
    train_size: int | None
    #: test questions evaluated (None: the whole test split, 9,673)
    eval_size: int | None
    epochs: float
    search_epochs: int
    batch_size: int
    #: training rows the search trains on (a seeded subset; it need not see every row)
    search_rows: int | None = None
    #: shorter text lengths exported next to the full one: none, since on the demo they gained 5 %
    #: latency for 3× the bundle size and twice the cold start and memory (README, "Text buckets")
    text_buckets: tuple[int, ...] = ()
    #: printed with the result
    caveat: str = ""


#: the full demo: within 30 minutes on 2 cores, accuracy on the whole test split. Every training
#: question (38,575; the images are encoded once, so more questions cost only steps), about 3,015
#: fine-tune steps (at 1.7 epochs the adapters often had not yet learnt the colour questions, and
#: runs spread widely: README, Status); the search trains on 12,000 of them.
FULL_DEMO = DemoSettings(
    train_size=None, eval_size=None, epochs=2.5, search_epochs=3, batch_size=32, search_rows=12_000
)
#: a smoke run of the same pipeline in a few minutes
QUICK_DEMO = DemoSettings(
    train_size=1_500,
    eval_size=500,
    epochs=1.0,
    search_epochs=2,
    batch_size=32,
    caveat="--quick trains on 1,500 questions for one epoch: its accuracy is NOT representative of "
    "what edge-vl reaches (run without --quick for that)",
)


def easy_vqa_examples(split: str) -> list[Example]:
    """All questions of the ``train`` or ``test`` split as examples (images ship inside the wheel)."""
    try:
        import easy_vqa
    except ImportError:
        raise MissingExtraError("the easy-vqa demo data", extra="demo") from None
    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rows = zip(questions, answers, image_ids, strict=True)
    return [Example(image=Path(paths[i]), text=q, label=a) for q, a, i in rows]


def write_easy_vqa_manifests(
    out_dir: str | Path, *, train_size: int | None = None, eval_size: int | None = None, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``eval.jsonl`` (random subsets of the given sizes, or all rows)."""
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    splits = []
    for split, size, name in (("train", train_size, "train.jsonl"), ("test", eval_size, "eval.jsonl")):
        rows = easy_vqa_examples(split)
        if size is not None and size < len(rows):
            rows = rng.sample(rows, size)
        splits.append(write_jsonl(rows, out_dir / name))
    return splits[0], splits[1]
