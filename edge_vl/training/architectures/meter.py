"""METER-style models (pretrained unimodal encoders + cross-modal fusion layers), the paper's second
model and the family of edge-vl-mini.

Skippable layers (12 for edge-vl-mini, as METER has in the paper): the text-encoder layers first,
then the fusion layers. Unlike the paper's METER, whose encoders are never skipped, the text-encoder
layers can be skipped here: MiniLM's layers are real pretrained layers a task may not need, and they
bring edge-vl-mini to the paper's 12. The image encoder is frozen and never skipped, so its output is
cached during training (exact: the same frozen computation).

Layers are post-LN BERT layers; adapters go where the authors' METER code puts them:
``a = LN(Dense(SelfAttn(x)) + x + A_sa(x))`` inside the attention output norm, and
``y = LN(FFN(a) + a) + A_ffn(a)`` after the output norm. A skipped layer gives ``x + A_skip(x)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_vl.budget import LayerCosts
from edge_vl.config import AdapterConfig
from edge_vl.manifest import ImageSpec
from edge_vl.runtime.preprocess import default_image_spec
from edge_vl.training.adapters import SkippableLayer
from edge_vl.training.architectures.base import ArchitectureFamily, HFModel, InputShape, label_maps

#: EfficientNet-Lite's TF-Lite input convention, (x − 127) / 128, as rescale/mean/std
LITE_MEAN, LITE_STD = 127 / 255, 128 / 255

#: random-weight configurations for tests (the encoders are small and random too)
_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=32,
        num_fusion_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_text_length=12,
        image_size=64,
        load_pretrained_encoders=False,
        text_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            type_vocab_size=2,
            vocab_size=0,
            pad_token_id=0,
        ),
    ),
}


class BertAdaptedLayer(SkippableLayer):
    """A post-LN ``BertLayer`` with METER's parallel adapters (self-attention and FFN)."""

    def __init__(self, layer: HFModel, hidden: int, config: AdapterConfig):
        super().__init__(layer, hidden, config)
        self.add_petl_adapters(("attn", "ffn"), hidden, config, eps=layer.output.LayerNorm.eps)
        if config.attention_rank:
            attention = layer.attention.self
            self.add_low_rank_updates(attention, ("query", "value"), config.attention_rank, config.init_std)
        if config.ffn_rank:
            for block in (layer.intermediate, layer.output):
                self.add_low_rank_updates(block, ("dense",), config.ffn_rank, config.init_std)

    def forward_kept(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs
    ):
        attention = self.layer.attention
        context, _ = attention.self(hidden_states, attention_mask=attention_mask)
        out = attention.output
        a = out.LayerNorm(
            out.dropout(out.dense(context)) + hidden_states + self.adapter("attn")(hidden_states)
        )
        return self.layer.output(self.layer.intermediate(a), a) + self.adapter("ffn")(a)

    def wrap_output(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states  # BertLayer returns a tensor


class MeterFamily(ArchitectureFamily):
    """edge-vl-mini (``model_type`` ``edge_vl_mini``): VQA as classification over a label set."""

    name = "meter"
    model_types = ("edge_vl_mini",)
    # beyond the paper's set (head, pooler, type embeddings): the image projection in front of the
    # fusion layers (+0.13 M parameters for edge-vl-mini; on easy-vqa it lifted yes/no questions)
    trainable_patterns = (
        "classifier",
        "pooler",
        "modality_embeddings",
        "image_proj",
        "image_norm",
        "image_pos",
    )
    # METER: PETL r = d/8, skip adapter r = 3d/8 (96 and 288 at d = 768 in the authors' code)
    default_adapters = AdapterConfig(petl_ratio=1 / 8, skip_ratio=3 / 8)
    # The authors train METER's fusion adapters at 2.5e-5–5e-5 × 5 (cross-modal multiplier), ViLT's
    # at 1e-4; on edge-vl-mini 1e-3 overshoots (collapses on some seeds), so a METER-like 1e-4.
    default_lr = 1e-4
    presets = _PRESETS

    def model_class(self) -> type:
        from edge_vl.training.mini import EdgeVLMiniModel

        return EdgeVLMiniModel

    def layer_lists(self, model: HFModel) -> list[nn.ModuleList]:
        return [model.text_encoder.encoder.layer, model.fusion]

    def wrap_layer(self, layer: HFModel, config: AdapterConfig) -> SkippableLayer:
        return BertAdaptedLayer(layer, layer.output.dense.out_features, config)

    def forward(self, model: HFModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(
            inputs["input_ids"],
            inputs["attention_mask"],
            pixel_values=inputs.get("pixel_values"),
            image_features=inputs.get("image_features"),
            text_states=inputs.get("text_states"),
        )

    def text_tower_layers(self, model: HFModel) -> range:
        return range(len(model.text_encoder.encoder.layer))

    def text_states(self, model: HFModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return model.encode_text(input_ids, attention_mask)

    def image_spec(self, model_dir: Path, model: HFModel) -> ImageSpec:
        return default_image_spec(
            model.config.image_size, mean=[LITE_MEAN] * 3, std=[LITE_STD] * 3, resample="bilinear"
        )

    def text_length(self, model: HFModel) -> int:
        return int(model.config.max_text_length)

    def tokenizer_dir(self, model_dir: Path) -> Path:
        if (Path(model_dir) / "tokenizer.json").is_file():
            return Path(model_dir)
        from edge_vl.training.mini.modeling import text_encoder_dir

        return text_encoder_dir()  # the shipped checkpoint uses MiniLM's tokenizer from its package

    @torch.no_grad()
    def cache_frozen_features(self, model: HFModel, data, *, keep_pixels: bool = False, batch_size: int = 64):
        pixels = data.images["pixel_values"]
        model.vision_encoder.eval()
        features = torch.cat(
            [model.image_features(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        )
        images = {"image_features": features, **({"pixel_values": pixels} if keep_pixels else {})}
        return data.with_images(images)

    def layer_costs(self, model: HFModel, shape: InputShape) -> LayerCosts:
        cfg = model.config
        h, w = shape.image
        grid = (h // 32) * (w // 32)
        n_text = shape.text_length or 0  # METER-style models always take text
        text_cfg = model.text_encoder.config
        n_text_layers = len(model.text_encoder.encoder.layer)
        own, petl, skip = [], [], []
        for i, layer in enumerate(self.layers(model)):
            is_text = i < n_text_layers
            n = n_text if is_text else n_text + grid
            d, f = (
                (text_cfg.hidden_size, text_cfg.intermediate_size)
                if is_text
                else (cfg.hidden_size, cfg.intermediate_size)
            )
            own.append(4 * n * d * d + 2 * n * n * d + 2 * n * d * f)
            petl.append(sum(a.macs(n) for a in layer.petl_adapters()))
            skip.append(layer.skip_adapter.macs(n))
        d = cfg.hidden_size
        head = d * 2 * d + 2 * d * cfg.num_labels
        base = conv_macs(model.vision_encoder, (1, 3, h, w)) + grid * cfg.image_features * d + d * d + head
        return LayerCosts(base=base, layer=tuple(own), petl=tuple(petl), skip=tuple(skip))

    def random_model(self, settings: dict[str, Any], vocab_size: int, labels: Sequence[str]) -> nn.Module:
        from edge_vl.training.mini import EdgeVLMiniConfig, EdgeVLMiniModel

        settings["text_config"] = {**settings["text_config"], "vocab_size": vocab_size}
        return EdgeVLMiniModel(EdgeVLMiniConfig(**label_maps(labels), **settings))


def conv_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of every Conv2d in ``module`` for one input of ``input_shape`` (read from output shapes)."""
    total = 0

    def hook(conv: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = conv.kernel_size
        total += output.numel() * (conv.in_channels // conv.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return total
