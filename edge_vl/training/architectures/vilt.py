"""ViLT (single-stream fusion transformer, the paper's first model): its blocks are the skippable layers.

Everything ViLT-specific lives here: which blocks can be skipped, where the two parallel adapters
go in the pre-LN block (as the authors' ViLT code places them), the deterministic image embedding,
the VQA head and loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edge_vl.budget import LayerCosts
from edge_vl.config import AdapterConfig
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

#: random-weight presets for tests and speed benchmarks (never pretrained weights)
_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        max_position_embeddings=16,
    ),
    "small": dict(
        hidden_size=64,
        num_hidden_layers=12,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=64,
        patch_size=8,
        max_position_embeddings=16,
    ),
    # the architecture of the public dandelin/vilt-b32 checkpoints, for speed benchmarks
    "b32": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=384,
        patch_size=32,
        max_position_embeddings=40,
    ),
}


class ViltAdaptedLayer(SkippableLayer):
    """A ``ViltLayer`` with two parallel adapters, placed as in the authors' ViLT code::

    h1 = h  + Attn(LN1(h))  + A0(h)
    h2 = h1 + MLP(LN2(h1))  + A1(h1)
    """

    def __init__(self, layer: HFModel, hidden: int, config: AdapterConfig):
        super().__init__(layer, hidden, config)
        self.add_petl_adapters(("attn", "mlp"), hidden, config, eps=layer.layernorm_before.eps)

    def forward_kept(self, hidden_states, attention_mask=None, output_attentions=False):
        layer = self.layer
        attn = layer.attention(layer.layernorm_before(hidden_states), attention_mask)[0]
        h1 = hidden_states + attn + self.adapter("attn")(hidden_states)
        # ViltOutput adds its residual (h1) itself
        h2 = layer.output(layer.intermediate(layer.layernorm_after(h1)), h1) + self.adapter("mlp")(h1)
        return (h2,)


class ViltFamily(ArchitectureFamily):
    """HF ``ViltForQuestionAnswering``: VQA as classification over a label set."""

    name = "vilt"
    model_types = ("vilt",)
    trainable_patterns = ("classifier", "pooler", "token_type_embeddings")
    default_adapters = AdapterConfig(petl_ratio=1 / 8, skip_ratio=2 / 8)
    presets = _PRESETS

    def model_class(self) -> type:
        from transformers import ViltForQuestionAnswering

        return ViltForQuestionAnswering

    def layer_lists(self, model: HFModel) -> list[nn.ModuleList]:
        return [model.vilt.encoder.layer]

    def wrap_layer(self, layer: HFModel, config: AdapterConfig) -> SkippableLayer:
        return ViltAdaptedLayer(layer, layer.layernorm_before.normalized_shape[0], config)

    def forward(self, model: HFModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic ViLT forward. Unlike HF's ``visual_embed`` (which samples patches at random
        with ``multinomial``), patches stay in order with an all-ones pixel mask; the pooled [CLS]
        output is the same because attention is permutation-equivariant."""
        vilt = model.vilt
        emb = vilt.embeddings
        input_ids, attention_mask, pixels = (
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["pixel_values"],
        )
        text = emb.text_embeddings(input_ids=input_ids)
        patches = emb.patch_embeddings(pixels)
        batch, dim, gh, gw = patches.shape
        pos = emb.position_embeddings[:, 1:, :]
        grid = model.config.image_size // model.config.patch_size
        if (gh, gw) != (grid, grid):
            pos = (
                F.interpolate(
                    pos.transpose(1, 2).reshape(1, dim, grid, grid),
                    size=(gh, gw),
                    mode="bilinear",
                    align_corners=True,
                )
                .flatten(2)
                .transpose(1, 2)
            )
        patches = patches.flatten(2).transpose(1, 2) + pos
        cls = emb.cls_token.expand(batch, -1, -1) + emb.position_embeddings[:, :1, :]
        image = emb.dropout(torch.cat([cls, patches], dim=1))
        image_types = torch.ones_like(image[..., 0], dtype=torch.long)
        text = text + emb.token_type_embeddings(torch.zeros_like(input_ids))
        image = image + emb.token_type_embeddings(image_types)
        hidden = torch.cat([text, image], dim=1)
        mask = torch.cat([attention_mask.to(hidden.dtype), image_types.to(hidden.dtype)], dim=1)
        additive = (1.0 - mask[:, None, None, :]) * torch.finfo(hidden.dtype).min
        for layer in vilt.encoder.layer:
            hidden = layer(hidden, additive)[0]
        pooled = vilt.pooler(vilt.layernorm(hidden))
        return model.classifier(pooled)

    def layer_costs(self, model: HFModel, shape: InputShape) -> LayerCosts:
        cfg = model.config
        d, f, p = cfg.hidden_size, cfg.intermediate_size, cfg.patch_size
        h, w = shape.image
        patches = (h // p) * (w // p)
        n = shape.text_length + 1 + patches  # text + [CLS] + patches
        layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * f  # QKV+O, scores+context, MLP
        head = d * 2 * d + 2 * d * cfg.num_labels
        base = patches * 3 * p * p * d + d * d + head  # patch projection, pooler, classifier
        layers = self.layers(model)
        return LayerCosts(
            base=base,
            layer=tuple(layer for _ in layers),
            petl=tuple(sum(a.macs(n) for a in layer.petl_adapters()) for layer in layers),
            skip=tuple(layer.skip_adapter.macs(n) for layer in layers),
        )

    def image_spec(self, model_dir: Path, model: HFModel) -> ImageSpec:
        cfg = read_image_processor_config(model_dir)
        return default_image_spec(
            model.config.image_size,
            mean=cfg.get("image_mean", (0.5, 0.5, 0.5)),
            std=cfg.get("image_std", (0.5, 0.5, 0.5)),
            resample=pil_resample_name(cfg.get("resample", 3)),
            rescale_factor=cfg.get("rescale_factor", 1 / 255),
        )

    def text_length(self, model: HFModel) -> int:
        return int(model.config.max_position_embeddings)

    def image_size_step(self, model: HFModel) -> int:
        return int(model.config.patch_size)

    def random_model(self, settings: dict[str, Any], vocab_size: int, labels: Sequence[str]) -> nn.Module:
        from transformers import ViltConfig, ViltForQuestionAnswering

        return ViltForQuestionAnswering(ViltConfig(vocab_size=vocab_size, **label_maps(labels), **settings))
