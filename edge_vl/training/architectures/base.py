"""The contract every architecture family implements, and the generic code built on it.

A family knows where a model's skippable layers (the DAS search's arms) are, how adapters attach to them,
how the task forward runs deterministically (the same code trains, evaluates and exports), and
how its inputs are preprocessed. Everything else — freezing, skipping, counting, saving the
tokenizer — is generic and lives here.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from edge_vl.budget import LayerCosts
from edge_vl.config import AdapterConfig
from edge_vl.errors import ModelError
from edge_vl.manifest import FoldedTexts, Head, ImageSpec, Preprocessing, TensorSpec, TextSpec
from edge_vl.training.adapters import PREFIX, SkippableLayer

#: a Hugging Face model: families reach its submodules by name (``model.vilt.encoder.layer``),
#: which torch's typing of ``Module.__getattr__`` (``Tensor | Module``) cannot follow
HFModel = Any


@dataclass(frozen=True)
class InputShape:
    """What the exported graph's static shapes depend on: the image size and the text length
    (None for image-only models)."""

    image: tuple[int, int]
    text_length: int | None

    @classmethod
    def of(cls, preprocessing: Preprocessing) -> InputShape:
        text = preprocessing.text
        height, width = preprocessing.image.size
        return cls((height, width), None if text is None else text.max_length)


class ArchitectureFamily(ABC):
    """One model family (ViLT, METER-style, CLIP, …). Stateless: every method takes the model."""

    #: stable id written to manifests
    name: ClassVar[str]
    #: the HF ``config.model_type`` values this family handles
    model_types: ClassVar[tuple[str, ...]]
    #: substrings of parameter names that train besides the inserted adapters (head, pooler, …)
    trainable_patterns: ClassVar[tuple[str, ...]] = ()
    #: adapter sizes used unless the caller overrides them
    default_adapters: ClassVar[AdapterConfig] = AdapterConfig()
    #: adapter learning rate used unless the caller sets one (the head trains at ``head_lr_mult`` ×)
    default_lr: ClassVar[float] = 1e-3

    # -- what each family provides ----------------------------------------------------------
    @abstractmethod
    def model_class(self) -> type:
        """The HF model class (with a ``classifier`` head) this family loads."""

    def load(
        self, model_dir: Path, labels: Sequence[str], *, prompts: Mapping[str, str] | None = None
    ) -> nn.Module:
        """Load the checkpoint offline (fp32, ``trust_remote_code=False``) with a freshly
        initialised ``classifier`` over ``labels``, as the authors' fine-tune run does.

        ``prompts`` (label → text) asks for a prompt head instead: images are classified against
        the text embeddings of the prompts. Only dual-encoder families (CLIP) have one."""
        if prompts is not None:
            raise ModelError(
                f"{self.name} models have no prompt head: label prompts need a dual encoder such as CLIP"
            )
        cls: Any = self.model_class()  # a transformers model class (from_pretrained)
        try:
            model = cls.from_pretrained(
                model_dir,
                local_files_only=True,
                trust_remote_code=False,
                dtype=torch.float32,
                ignore_mismatched_sizes=True,
                **label_maps(labels),
            )
        except (OSError, ValueError) as e:
            raise ModelError(f"{model_dir}: cannot load a {cls.__name__} checkpoint ({e})") from e
        model.classifier.apply(model._init_weights)
        return model

    @abstractmethod
    def layer_lists(self, model: HFModel) -> list[nn.ModuleList]:
        """The ``ModuleList``s whose entries are the DAS layers; layers are numbered across them in order."""

    @abstractmethod
    def wrap_layer(self, layer: HFModel, config: AdapterConfig) -> SkippableLayer:
        """Wrap one layer with the family's PETL adapters and a skip adapter."""

    @abstractmethod
    def forward(self, model: HFModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic, traceable task forward: named input tensors → logits."""

    def export_module(
        self, model: HFModel, names: Sequence[str], folded: FoldedTexts | None = None
    ) -> nn.Module:
        """What :func:`edge_vl.converters.export` traces: a module taking the inputs ``names`` positionally
        and returning the logits (default: :meth:`forward`). A family overrides it only if export
        needs more than its forward (a tower split, a patched submodule). With ``folded``, the text
        tower's states of those texts become constants and ``names`` has ``text_index`` instead of
        the token inputs."""
        if folded is not None:
            return FoldedTextInputs(self, model, names, folded)
        return PositionalInputs(self, model, names)

    def text_tower_layers(self, model: HFModel) -> range:
        """The layers that see only the text, so compute the same for a fixed question: what folding
        removes (:mod:`edge_vl.folding`). Empty: the family cannot fold its text (single-stream
        models mix text and image from their first layer)."""
        return range(0)

    def text_states(
        self, model: HFModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The text tower's output states, which :meth:`forward` accepts as ``text_states``."""
        raise ModelError(f"{self.name} models have no separate text tower to fold")

    def head(self, model: HFModel, kind: str, prompts: Mapping[str, str] | None = None) -> Head:
        """The head's labels, with the score function ``kind`` its training loss implies
        (:func:`edge_vl.training.losses.score_kind`)."""
        id2label = model.config.id2label
        labels = tuple(id2label[i] for i in range(len(id2label)))
        return Head(kind=kind, labels=labels, prompts=dict(prompts) if prompts else None)

    def input_specs(self, model: HFModel, shape: InputShape) -> list[TensorSpec]:
        """Exported inputs (default: token ids and mask at the fixed text length, fixed-size pixels)."""
        h, w = shape.image
        text = (
            []
            if shape.text_length is None
            else [
                TensorSpec("input_ids", (-1, shape.text_length), "int64"),
                TensorSpec("attention_mask", (-1, shape.text_length), "int64"),
            ]
        )
        return [*text, TensorSpec("pixel_values", (-1, 3, h, w), "float32")]

    @abstractmethod
    def layer_costs(self, model: HFModel, shape: InputShape) -> LayerCosts:
        """Analytic MACs of the model at batch 1, split by layer (adapters inserted)."""

    @abstractmethod
    def image_spec(self, model_dir: Path, model: HFModel) -> ImageSpec:
        """Image preprocessing, as the checkpoint's processor (or the family) defines it."""

    @abstractmethod
    def text_length(self, model: HFModel) -> int | None:
        """The fixed text length of the exported model; None for image-only models."""

    def image_size_step(self, model: HFModel) -> int:
        """Input sizes the model takes are multiples of this (its patch size, or its image encoder's
        stride)."""
        return 32

    def resized(self, spec: ImageSpec, size: int, model: HFModel) -> ImageSpec:
        """``spec`` at ``size`` × ``size`` pixels instead of the checkpoint's (``--image-size``): the
        model interpolates its image position embeddings (ViLT, CLIP and edge-vl-mini do), and
        fewer pixels mean fewer image tokens, so less work in every layer that sees them."""
        step = self.image_size_step(model)
        if size < step or size % step:
            raise ModelError(f"--image-size {size}: {self.name} models take multiples of {step} pixels")
        return replace(
            spec, size=(size, size), shortest_edge=size if spec.shortest_edge is not None else None
        )

    def input_shape(self, model_dir: Path, model: HFModel) -> InputShape:
        height, width = self.image_spec(model_dir, model).size
        return InputShape((height, width), self.text_length(model))

    #: named random-weight configurations for tests and demos (family-specific settings)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @abstractmethod
    def random_model(self, settings: dict[str, Any], vocab_size: int, labels: Sequence[str]) -> nn.Module:
        """A randomly initialised HF model from a preset's ``settings``."""

    def random_checkpoint(
        self,
        out_dir: Path,
        *,
        vocab: Sequence[str],
        labels: Sequence[str],
        preset: str = "tiny",
        seed: int = 0,
    ) -> Path:
        """Write a random-weight checkpoint (config, safetensors, WordPiece tokenizer over ``vocab``)
        for tests and demos — never mistake it for a pretrained model."""
        if preset not in self.presets:
            raise ModelError(f"unknown {self.name} preset {preset!r}; choose one of {sorted(self.presets)}")
        out_dir = Path(out_dir)
        write_wordpiece_tokenizer(out_dir, vocab)
        vocab_size = len((out_dir / "vocab.txt").read_text(encoding="utf-8").split())
        torch.manual_seed(seed)
        self.random_model(dict(self.presets[preset]), vocab_size, labels).save_pretrained(out_dir)
        return out_dir

    def cache_frozen_features(self, model: HFModel, data, *, keep_pixels: bool = False):
        """Replace (or, with ``keep_pixels``, complement) ``data``'s images by what a frozen image
        encoder computes from them, where the family's forward accepts that instead. Default: no-op."""
        return data

    # -- generic behaviour ------------------------------------------------------------------
    def layer_names(self, model: HFModel) -> list[str]:
        """Dotted module paths of the layers, in layer order."""
        paths = {id(module): name for name, module in model.named_modules()}
        return [f"{paths[id(layers)]}.{i}" for layers in self.layer_lists(model) for i in range(len(layers))]

    def insert_adapters(self, model: HFModel, config: AdapterConfig | None = None) -> list[SkippableLayer]:
        """Wrap every layer in place; returns the wrappers. Refuses to wrap twice."""
        config = config or self.default_adapters
        if any(isinstance(layer, SkippableLayer) for layers in self.layer_lists(model) for layer in layers):
            raise ModelError("adapters are already inserted in this model")
        for layers in self.layer_lists(model):
            for i, layer in enumerate(layers):
                layers[i] = self.wrap_layer(layer, config)
        return self.layers(model)

    def layers(self, model: HFModel) -> list[SkippableLayer]:
        """The wrapped layers (after :meth:`insert_adapters`)."""
        layers = [layer for group in self.layer_lists(model) for layer in group]
        wrapped = [layer for layer in layers if isinstance(layer, SkippableLayer)]
        if len(wrapped) != len(layers):
            raise ModelError("call insert_adapters() before using the layers")
        return wrapped

    def set_skipped(self, model: HFModel, skipped: Sequence[int]) -> None:
        """Bypass exactly the layers in ``skipped`` with their skip adapters."""
        layers = self.layers(model)
        bad = [i for i in skipped if not 0 <= int(i) < len(layers)]
        if bad:
            raise ModelError(f"skip index(es) {bad} out of range: this model has layers 0..{len(layers) - 1}")
        chosen = {int(i) for i in skipped}
        for i, layer in enumerate(layers):
            layer.skipped = i in chosen

    def skipped(self, model: HFModel) -> list[int]:
        return [i for i, layer in enumerate(self.layers(model)) if layer.skipped]

    def is_trainable(self, name: str) -> bool:
        """True for inserted adapters and the family's head/pooler-like parameters."""
        return PREFIX in name or any(p in name for p in self.trainable_patterns)

    def freeze(self, model: HFModel) -> list[str]:
        """Freeze everything but :meth:`is_trainable` parameters; returns the trainable names."""
        names = []
        for name, param in model.named_parameters():
            param.requires_grad_(self.is_trainable(name))
            if param.requires_grad:
                names.append(name)
        return names

    def active_trainable_parameters(self, model: HFModel) -> int:
        """Trainable parameters actually used by the current skip set: the PETL adapters of
        skipped layers and the skip adapters of kept layers are not counted (the authors' code
        prints all of them)."""
        unused: set[int] = set()
        for layer in self.layers(model):
            dead = [layer.layer] if layer.skipped else [layer.skip_adapter]
            if layer.skipped:
                dead += [
                    m
                    for n, m in layer.named_children()
                    if n.startswith(PREFIX) and m is not layer.skip_adapter
                ]
            for module in dead:
                unused.update(id(p) for p in module.parameters())
        return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in unused)

    def tokenizer_dir(self, model_dir: Path) -> Path:
        """Where the checkpoint's tokenizer files are (default: the checkpoint directory)."""
        return model_dir

    def source_files(self, model_dir: Path) -> list[Path]:
        """Every file a build may read from the checkpoint and its tokenizer directory (hidden
        files aside): a resumed build must find the same bytes in each."""
        roots = {Path(model_dir), Path(self.tokenizer_dir(model_dir))}
        return sorted(
            {
                p
                for root in roots
                for p in root.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
            }
        )

    def save_tokenizer(self, model_dir: Path, out_dir: Path, max_length: int) -> TextSpec:
        """Save the checkpoint's tokenizer as ``tokenizer.json``; return the manifest text spec."""
        from transformers import AutoTokenizer

        source = self.tokenizer_dir(model_dir)
        try:
            tok = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise ModelError(f"{source}: cannot load a tokenizer ({e})") from e
        if not getattr(tok, "is_fast", False):
            raise ModelError(f"{source}: the tokenizer has no fast (tokenizer.json) version")
        tok.backend_tokenizer.save(str(out_dir / "tokenizer.json"))
        return TextSpec(
            tokenizer="tokenizer.json",
            max_length=int(max_length),
            pad_id=int(tok.pad_token_id),
            pad_token=str(tok.pad_token),
        )


class PositionalInputs(nn.Module):
    """Calls ``family.forward`` with named inputs received positionally, for tracing."""

    def __init__(self, family: ArchitectureFamily, model: HFModel, names: Sequence[str]):
        super().__init__()
        self.family, self.model, self.names = family, model, list(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.family.forward(self.model, dict(zip(self.names, tensors, strict=True)))


class FoldedTextInputs(nn.Module):
    """``family.forward`` on ``text_index`` and the image inputs: the text tower's states of the
    folded texts are computed here once (with the model's trained adapters and skip set) and held as
    constants, so the traced graph has no text tower and no padding tokens."""

    def __init__(self, family: ArchitectureFamily, model: HFModel, names: Sequence[str], folded: FoldedTexts):
        super().__init__()
        self.family, self.model, self.names = family, model, list(names)
        # as long as the longest folded text: only padding is cut, which every layer masks out
        ids = torch.zeros(len(folded.token_ids), folded.length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, tokens in enumerate(folded.token_ids):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        with torch.no_grad():
            states = family.text_states(model.eval(), ids, mask)
        self.register_buffer("ids", ids)
        self.register_buffer("mask", mask)
        self.register_buffer("states", states)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.names, tensors, strict=True))
        index = inputs.pop("text_index")
        inputs.update(
            input_ids=self.ids[index], attention_mask=self.mask[index], text_states=self.states[index]
        )
        return self.family.forward(self.model, inputs)


def label_maps(labels: Sequence[str]) -> dict[str, Any]:
    """``id2label``/``label2id`` keyword arguments for an HF config."""
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


def read_image_processor_config(model_dir: Path) -> dict[str, Any]:
    """The image-processor settings saved with a checkpoint (transformers 5 ``processor_config.json``
    or the older ``preprocessor_config.json``), or ``{}``."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = model_dir / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return data.get("image_processor", data)
    return {}


def pil_resample_name(code: int) -> str:
    """The :class:`~edge_vl.bundle.ImageSpec` name of a PIL resampling code in a processor config."""
    return {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(int(code), "bicubic")


def write_wordpiece_tokenizer(out_dir: Path, vocab: Sequence[str]) -> None:
    """Save a lower-casing BERT WordPiece tokenizer over ``vocab`` (for random test checkpoints)."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]  # exported lazily

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = specials + sorted({w for w in vocab if w not in specials})
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True).save_pretrained(out_dir)
