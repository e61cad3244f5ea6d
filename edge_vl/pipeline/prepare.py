"""Stage 1: load the checkpoint offline, save its tokenizer, preprocess every example once with
the runtime's own code (so training and device see identical inputs), count the layers' MACs."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_vl.budget import LayerCosts
from edge_vl.config import BuildConfig
from edge_vl.manifest import FoldedTexts, Preprocessing
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
    #: MACs per layer of the model the bundle ships (a folded text tower costs nothing)
    costs: Any  # LayerCosts
    tokenizer_file: Path | None
    model: Any = field(repr=False)
    #: the texts folded into the graph (:mod:`edge_vl.folding`); None: the bundle runs its text tower
    folded: FoldedTexts | None = None
    #: the full model's input shape: the checkpoint's own image size (what a user would otherwise run)
    full_shape: Any = None
    #: MACs per layer of the full model at ``full_shape``, as the checkpoint runs it (text tower included)
    full_costs: LayerCosts | None = None
    #: training rows with raw inputs (as the exported model takes them), for INT8 calibration
    calibration_data: Any = None
    #: per-precision factors from latency here to latency on ``config.target_profile`` (measured once)
    target_scale: dict[str, float] | None = None
    #: where training runs (:class:`edge_vl.training.parallel.Placement`; None: this process's CPU)
    placement: Any = None

    def input_specs(self, model) -> list[Any]:
        """The exported graph's inputs: the family's, with ``text_index`` for the token inputs when
        the text is folded."""
        from edge_vl.folding import folded_input_specs

        specs = self.family.input_specs(model, self.shape)
        return specs if self.folded is None else folded_input_specs(specs)

    @property
    def free_layers(self) -> tuple[int, ...]:
        """Layers the bundle does not run whether kept or skipped (a folded text tower)."""
        return tuple(self.family.text_tower_layers(self.model)) if self.folded is not None else ()

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
    full_shape = replace(shape, image=family.image_spec(Path(config.model_dir), model).size)
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

    train_data, eval_data = encoded(train_examples), encoded(eval_examples, keep_pixels=True)
    folded = fold_texts(config, family, model, train_examples, train_data, eval_data, echo)
    if folded is not None:
        train_data, eval_data, calibration = (
            None if d is None else with_text_index(folded, d) for d in (train_data, eval_data, calibration)
        )
    return Prepared(
        family=family,
        labels=labels,
        preprocessing=preprocessing,
        shape=shape,
        warnings=data.warnings,
        eval_examples=list(data.evals),
        train_data=train_data,
        eval_data=eval_data,
        n_train=len(train_examples),
        n_eval=len(eval_examples),
        layer_names=family.layer_names(model),
        costs=shipped_costs(family, model, shape, folded),
        full_shape=full_shape,
        full_costs=family.layer_costs(model, full_shape),
        folded=folded,
        tokenizer_file=tokenizer_file,
        model=model,
        calibration_data=calibration,
        target_scale=target_scale(config.target_profile, echo) if config.target_profile else None,
        placement=placement,
    )


def fold_texts(config: BuildConfig, family, model, train_examples, train_data, eval_data, echo):
    """The texts to fold into the graph (:mod:`edge_vl.folding`), or None: when the training rows ask
    few distinct texts, the family has a separate text tower, and the eval rows ask nothing else."""
    from edge_vl.errors import InputError
    from edge_vl.folding import text_index, texts_to_fold

    if "input_ids" not in train_data.rows or not config.fold_text:
        return None
    rows = train_data.rows
    folded = texts_to_fold(
        [ex.text for ex in train_examples], rows["input_ids"].numpy(), rows["attention_mask"].numpy()
    )
    if folded is None:
        return None
    shown = "; ".join(repr(t) for t in folded.texts)
    if not family.text_tower_layers(model):
        echo(f"text: the data asks only {shown}, but edge-vl folds no text of {family.name} models (yet)")
        return None
    try:
        text_index(folded, eval_data.rows["input_ids"].numpy(), eval_data.rows["attention_mask"].numpy())
    except InputError:
        echo(
            f"text: the training data asks only {shown}, but the eval data asks other texts: the "
            "text tower stays"
        )
        return None
    echo(
        f"text: every row asks {shown}: the text tower's output is computed once and folded into the "
        "graph; the bundle answers only these texts (--no-fold-text keeps the tower)"
    )
    return folded


def shipped_costs(family, model, shape, folded):
    """MACs per layer of the graph the bundle ships: with a folded text, the text layers cost nothing
    and the fusion sees the longest folded text's tokens instead of the padded length."""
    if folded is None:
        return family.layer_costs(model, shape)
    costs = family.layer_costs(model, replace(shape, text_length=folded.length))
    return costs.free(family.text_tower_layers(model))


def with_text_index(folded, data):
    """``data`` with each row's ``text_index`` into ``folded`` (what a folded graph takes)."""
    import torch

    from edge_vl.folding import text_index
    from edge_vl.training.encoded import EncodedData

    index = text_index(folded, data.rows["input_ids"].numpy(), data.rows["attention_mask"].numpy())
    return EncodedData({**data.rows, "text_index": torch.from_numpy(index)}, data.images)


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
            f"image size: {config.image_size} × {config.image_size} pixels (the checkpoint "
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
