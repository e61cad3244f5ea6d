"""Stage 1: load the checkpoint offline, save its tokenizer, preprocess every example once with
the runtime's own code (so training and device see identical inputs), count the layers' MACs."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_vl.config import BuildConfig
from edge_vl.manifest import Preprocessing
from edge_vl.pipeline.dataset import TrainingData


@dataclass
class Prepared:
    """What the later stages share: the encoded data and everything derived from the checkpoint."""

    family: Any
    labels: list[str]
    preprocessing: Preprocessing
    #: the static input shapes the exported graph is built for (``InputShape``)
    shape: Any
    #: what the data check found worth a look (printed, and recorded in the manifest and report)
    warnings: list[str]
    #: the eval rows as read (their images and texts give the drift reference profile)
    eval_examples: list[Any]
    train_data: Any  # EncodedData
    eval_data: Any
    n_train: int
    n_eval: int
    layer_names: list[str]
    costs: Any  # LayerCosts
    tokenizer_file: Path | None
    model: Any = field(repr=False)
    #: training rows with raw inputs (as the exported model takes them), for INT8 calibration
    calibration_data: Any = None
    #: per-precision factors from latency here to latency on ``config.target_profile`` (measured once)
    target_scale: dict[str, float] | None = None
    #: where training runs (:class:`edge_vl.training.parallel.Placement`; None: this process's CPU)
    placement: Any = None

    @property
    def placed(self) -> dict[str, Any]:
        """``placement=`` for the training code, when the build chose one."""
        return {} if self.placement is None else {"placement": self.placement}


def prepare(
    config: BuildConfig, data: TrainingData, work: Path, echo: Callable[[str], None], *, placement: Any = None
) -> Prepared:
    """Load the checkpoint, save its tokenizer into ``work``, encode the examples. The returned
    ``model`` has fresh adapters and is ready for the search."""
    from edge_vl.bench import target_scale
    from edge_vl.runtime.tokenize import TextEncoder
    from edge_vl.training.architectures import family_for_checkpoint
    from edge_vl.training.architectures.base import InputShape
    from edge_vl.training.encoded import encode_examples

    train_examples, eval_examples, labels = data.train, data.evals, data.labels
    echo(f"data: {len(train_examples)} training and {len(eval_examples)} eval rows, {len(labels)} labels")
    family = family_for_checkpoint(config.model_dir)
    model = load_adapted(family, config, labels)
    preprocessing, tokenizer_file = _preprocessing(config, family, model, work, echo)
    encoder = TextEncoder.from_spec(work, preprocessing.text) if preprocessing.text is not None else None
    shape = InputShape.of(preprocessing)
    echo(f"model: {family.name} from {config.model_dir}, {len(family.layers(model))} skippable layers")
    calibration = None
    if config.precision in ("int8", "auto"):
        rows = random.Random(config.train.seed).sample(
            train_examples, min(config.calibration_size, len(train_examples))
        )
        calibration = encode_examples(rows, preprocessing.image, encoder, labels)

    def encoded(examples, **kwargs):
        data = encode_examples(examples, preprocessing.image, encoder, labels)
        return family.cache_frozen_features(model, data, **kwargs)

    return Prepared(
        family=family,
        labels=labels,
        preprocessing=preprocessing,
        shape=shape,
        warnings=data.warnings,
        eval_examples=list(data.evals),
        train_data=encoded(train_examples),
        eval_data=encoded(eval_examples, keep_pixels=True),
        n_train=len(train_examples),
        n_eval=len(eval_examples),
        layer_names=family.layer_names(model),
        costs=family.layer_costs(model, shape),
        tokenizer_file=tokenizer_file,
        model=model,
        calibration_data=calibration,
        target_scale=target_scale(config.target_profile, echo) if config.target_profile else None,
        placement=placement,
    )


def _preprocessing(config: BuildConfig, family: Any, model: Any, work: Path, echo: Callable[[str], None]):
    """The bundle's preprocessing (the checkpoint's tokenizer saved into ``work``; the image size
    given by ``--image-size``, else the checkpoint's) and the saved tokenizer's path."""
    from edge_vl.training.architectures.quiet import quiet_transformers

    text_length = family.text_length(model)
    text = tokenizer_file = None
    if text_length is not None:  # image-only models (a prompt head) take no text
        with quiet_transformers():
            text = family.save_tokenizer(Path(config.model_dir), work, text_length)
        tokenizer_file = work / text.tokenizer
    image = family.image_spec(Path(config.model_dir), model)
    if config.image_size is not None:
        checkpoint = image.size[0]
        image = family.resized(image, config.image_size, model)
        echo(
            f"image size: {config.image_size} × {config.image_size} pixels (--image-size; the checkpoint "
            f"takes {checkpoint})"
        )
    return Preprocessing(image=image, text=text), tokenizer_file


def load_adapted(family, config: BuildConfig, labels: Sequence[str]):
    """Pretrained weights, fresh head and adapters (seeded), backbone frozen: where the search and
    the fine-tune both start (the authors' fine-tune reloads the pretrained weights)."""
    import torch

    from edge_vl.training.architectures.quiet import quiet_transformers

    torch.manual_seed(config.train.seed)
    with quiet_transformers():
        model = family.load(Path(config.model_dir), labels, prompts=config.label_prompts(labels))
    family.insert_adapters(model, config.adapters)
    family.freeze(model)
    return model
