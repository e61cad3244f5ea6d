"""Stage 0: read and check the training and eval data before anything is written, and list the
inputs a build reads (what ``--out`` must never be or contain)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_vl.config import BuildConfig
from edge_vl.data import Example, data_warnings, label_set, read_examples
from edge_vl.errors import DataError


@dataclass(frozen=True)
class TrainingData:
    """Checked training and eval rows, the label set (the head's class order), and warnings."""

    train: list[Example]
    evals: list[Example]
    labels: list[str]
    warnings: list[str]


def read_data(config: BuildConfig) -> TrainingData:
    """Validate both manifests; eval labels must occur in training (or, with label prompts, have
    a prompt; every training label then needs one); at least two classes."""
    prompt_head = config.prompts is not None or config.prompt_template is not None
    train_examples = read_examples(config.train_data, require_text=not prompt_head)
    eval_examples = read_examples(config.eval_data, require_text=not prompt_head)
    labels = label_set(train_examples)
    if prompt_head:
        prompts = config.label_prompts(labels) or {}
        missing = [label for label in labels if label not in prompts]
        if missing:
            raise DataError(f"training label(s) {missing} have no prompt in the label prompts")
        labels = sorted(prompts)
    if len(labels) < 2:
        raise DataError(
            f"every training row has the label {labels[0]!r}; a classifier needs at least two classes",
            path=str(config.train_data),
        )
    known = set(labels)
    where = "the training data or the label prompts" if prompt_head else "the training data"
    for ex in eval_examples:
        if ex.label not in known:
            raise DataError(f"label {ex.label!r} does not occur in {where}", path=ex.manifest, line=ex.line)
    return TrainingData(train_examples, eval_examples, labels, data_warnings(train_examples, eval_examples))


def build_inputs(config: BuildConfig, data: TrainingData) -> dict[str, list[Path]]:
    """Every path the build reads, by role: what ``--out`` must never be or contain."""
    images = {ex.image for ex in [*data.train, *data.evals]}
    inputs = {
        "the training data": [Path(config.train_data)],
        "the eval data": [Path(config.eval_data)],
        "images of the data": sorted(images),
        "the model": [Path(config.model_dir)],
    }
    return inputs
