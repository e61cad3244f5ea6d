"""CLIP-style dual encoders (HF ``CLIPModel``): the skippable layers are both towers' layers.

Everything CLIP-specific lives here: which layers can be skipped (text tower first, then vision tower),
where the two parallel adapters go in the pre-LN CLIP layer (as in ViLT's), the
pooling, the task head and the preprocessing (shortest-edge resize + centre crop, CLIP's
mean/std, read from the checkpoint's ``preprocessor_config.json``).

Two heads:

- ``fused`` (default): the L2-normalised image and text embeddings ``i`` and ``t`` go through a
  small MLP on ``[i, t, i·t]`` — classification from image + text, like a VQA head on a dual
  encoder. Skippable layers: every layer of both towers (text first).
- ``prompt`` (``load(..., prompts={label: text})``): each label has a text prompt; the text tower
  runs once, at load, and the normalised prompt embeddings become a constant of the model. Logits
  are CLIP's ``logit_scale · cos(image, prompt)``. The device runs the image tower only, so only
  layers can be skipped: skipping a text layer would save nothing there.

The text embedding is taken at the last non-padding token, where CLIP's tokenizer puts its
end-of-text token; transformers pools at the first ``eos_token_id`` instead, which is the same
position for CLIP's own tokenizer and also works for any tokenizer a checkpoint ships.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPConfig, CLIPModel

from edge_vl.budget import LayerCosts
from edge_vl.config import AdapterConfig
from edge_vl.errors import ModelError
from edge_vl.manifest import ImageSpec
from edge_vl.runtime.preprocess import default_image_spec
from edge_vl.training.adapters import SkippableLayer
from edge_vl.training.architectures.base import (
    ArchitectureFamily,
    HFModel,
    InputShape,
    label_maps,
    pil_resample_name,
    read_image_processor_config,
)

#: OpenAI CLIP's normalisation (transformers' OPENAI_CLIP_MEAN/STD)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: random-weight configurations (never pretrained weights): tests, and the ViT-B/32 architecture
#: for speed benchmarks
_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        projection_dim=16,
        text_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=16,
        ),
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        ),
    ),
    "b32": dict(
        projection_dim=512,
        text_config=dict(
            hidden_size=512,
            num_hidden_layers=12,
            num_attention_heads=8,
            intermediate_size=2048,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            image_size=224,
            patch_size=32,
        ),
    ),
}


class CLIPClassifier(CLIPModel):
    """``CLIPModel`` plus edge-vl's heads: the fused ``classifier``, or (after
    :meth:`use_prompt_head`) fixed ``label_embeddings``."""

    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        p = config.projection_dim
        self.classifier: nn.Sequential | None = nn.Sequential(
            nn.Linear(3 * p, 2 * p), nn.GELU(), nn.Linear(2 * p, int(config.num_labels or 1))
        )
        self.label_embeddings: torch.Tensor | None = None
        self.post_init()

    def use_prompt_head(self, label_embeddings: torch.Tensor) -> None:
        """Classify images against these (normalised) prompt embeddings; drops the fused head."""
        self.classifier = None
        del self.label_embeddings
        self.register_buffer("label_embeddings", F.normalize(label_embeddings.detach(), dim=-1))

    @property
    def has_prompt_head(self) -> bool:
        return self.label_embeddings is not None


class ClipAdaptedLayer(SkippableLayer):
    """A pre-LN ``CLIPEncoderLayer`` with two parallel adapters::

    h1 = h  + Attn(LN1(h)) + A0(h)
    h2 = h1 + MLP(LN2(h1)) + A1(h1)
    """

    def __init__(self, layer: HFModel, hidden: int, config: AdapterConfig):
        super().__init__(layer, hidden, config)
        self.add_petl_adapters(("attn", "mlp"), hidden, config, eps=layer.layer_norm1.eps)

    def forward_kept(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
        layer = self.layer
        attn, _ = layer.self_attn(layer.layer_norm1(hidden_states), attention_mask=attention_mask, **kwargs)
        h1 = hidden_states + attn + self.adapter("attn")(hidden_states)
        return h1 + layer.mlp(layer.layer_norm2(h1)) + self.adapter("mlp")(h1)

    def wrap_output(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states  # CLIPEncoderLayer returns a tensor


class ClipFamily(ArchitectureFamily):
    """HF ``CLIPModel`` checkpoints with a fused image + text classification head."""

    name = "clip"
    model_types = ("clip",)
    trainable_patterns = ("classifier",)
    # ViLT-like pre-LN layers: PETL r = d/8, skip adapter r = 2d/8
    default_adapters = AdapterConfig(petl_ratio=1 / 8, skip_ratio=2 / 8)
    presets = _PRESETS

    def model_class(self) -> type:
        return CLIPClassifier

    def load(self, model_dir: Path, labels: Sequence[str], *, prompts: Mapping[str, str] | None = None):
        model = super().load(model_dir, labels)
        if prompts is not None:
            missing = [label for label in labels if label not in prompts]
            if missing:
                raise ModelError(f"no prompt for label(s) {missing}")
            texts = [prompts[label] for label in labels]
            model.use_prompt_head(self.prompt_embeddings(model_dir, model, texts))
        return model

    @torch.no_grad()
    def prompt_embeddings(self, model_dir: Path, model: HFModel, prompts: Sequence[str]) -> torch.Tensor:
        """Text-tower embeddings of ``prompts`` (the checkpoint's tokenizer), in eval mode."""
        from edge_vl.runtime.tokenize import TextEncoder

        with tempfile.TemporaryDirectory() as tmp:
            length = int(model.config.text_config.max_position_embeddings)
            spec = self.save_tokenizer(Path(model_dir), Path(tmp), length)
            encoded = TextEncoder.from_spec(Path(tmp), spec).encode(list(prompts))
        was_training = model.training
        model.eval()
        ids, mask = (torch.from_numpy(encoded[k]) for k in ("input_ids", "attention_mask"))
        embeddings = self._text_embeddings(model, ids, mask)
        model.train(was_training)
        return embeddings

    def layer_lists(self, model: HFModel) -> list[nn.ModuleList]:
        if model.has_prompt_head:  # the device never runs the text tower
            return [model.vision_model.encoder.layers]
        return [model.text_model.encoder.layers, model.vision_model.encoder.layers]

    def wrap_layer(self, layer: HFModel, config: AdapterConfig) -> SkippableLayer:
        return ClipAdaptedLayer(layer, layer.layer_norm1.normalized_shape[0], config)

    def forward(self, model: HFModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = inputs["pixel_values"]
        other_size = pixels.shape[-1] != model.config.vision_config.image_size  # --image-size
        pooled = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=other_size).pooler_output
        i = F.normalize(model.visual_projection(pooled), dim=-1)
        if model.has_prompt_head:
            return model.logit_scale.exp() * i @ model.label_embeddings.T
        t = F.normalize(self._text_embeddings(model, inputs["input_ids"], inputs["attention_mask"]), dim=-1)
        return model.classifier(torch.cat([i, t, i * t], dim=-1))

    @staticmethod
    def _text_embeddings(model: HFModel, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = model.text_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        last = (mask.sum(dim=-1) - 1).clamp(min=0)
        return model.text_projection(hidden[torch.arange(hidden.shape[0]), last])

    def layer_costs(self, model: HFModel, shape: InputShape) -> LayerCosts:
        cfg = model.config
        vision, text = cfg.vision_config, cfg.text_config
        h, w = shape.image
        patch = vision.patch_size
        patches = (h // patch) * (w // patch)
        n_text, n_vision = shape.text_length or 0, patches + 1

        def layer(n: int, d: int, f: int) -> int:
            return 4 * n * d * d + 2 * n * n * d + 2 * n * d * f  # QKV+O, scores+context, MLP

        prompt = model.has_prompt_head
        sizes = [] if prompt else [(n_text, text) for _ in model.text_model.encoder.layers]
        sizes += [(n_vision, vision) for _ in model.vision_model.encoder.layers]
        layers = self.layers(model)
        p = cfg.projection_dim
        base = patches * 3 * patch * patch * vision.hidden_size + vision.hidden_size * p
        if prompt:  # cosine against every label prompt
            base += p * cfg.num_labels
        else:  # text projection and the fused MLP
            base += text.hidden_size * p + 3 * p * 2 * p + 2 * p * cfg.num_labels
        return LayerCosts(
            base=base,
            layer=tuple(layer(n, c.hidden_size, c.intermediate_size) for n, c in sizes),
            petl=tuple(
                sum(a.macs(n) for a in layer.petl_adapters())
                for layer, (n, _) in zip(layers, sizes, strict=True)
            ),
            skip=tuple(layer.skip_adapter.macs(n) for layer, (n, _) in zip(layers, sizes, strict=True)),
        )

    def image_size_step(self, model: HFModel) -> int:
        return int(model.config.vision_config.patch_size)

    def image_spec(self, model_dir: Path, model: HFModel) -> ImageSpec:
        cfg = read_image_processor_config(model_dir)
        vision = model.config.vision_config
        crop = cfg.get("crop_size", vision.image_size)
        crop = [crop["height"], crop["width"]] if isinstance(crop, dict) else [int(crop), int(crop)]
        size = cfg.get("size", {"shortest_edge": vision.image_size})
        shortest = size.get("shortest_edge", max(crop)) if isinstance(size, dict) else int(size)
        return default_image_spec(
            crop,
            shortest_edge=shortest,
            resample=pil_resample_name(cfg.get("resample", 3)),
            mean=cfg.get("image_mean", CLIP_MEAN),
            std=cfg.get("image_std", CLIP_STD),
            rescale_factor=cfg.get("rescale_factor", 1 / 255),
        )

    def text_length(self, model: HFModel) -> int | None:
        if model.has_prompt_head:
            return None  # no text input on the device
        return int(model.config.text_config.max_position_embeddings)

    def random_model(self, settings: dict[str, Any], vocab_size: int, labels: Sequence[str]) -> nn.Module:
        text = {**settings["text_config"], "vocab_size": vocab_size}
        config = CLIPConfig(
            text_config=text,
            vision_config=settings["vision_config"],
            projection_dim=settings["projection_dim"],
            **label_maps(labels),
        )
        return CLIPClassifier(config)
