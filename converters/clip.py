"""CLIP export (fused head): inputs ``input_ids``, ``attention_mask`` (text length fixed),
``pixel_values`` (fixed crop size), output ``logits``. Both towers go into one IR; skipped layers
take the ``x + A_skip(x)`` branch while tracing, so their weights never enter the IR.
"""

from __future__ import annotations

from converters.base import Converter
from converters.registry import register_converter


class ClipConverter(Converter):
    family_name = "clip"


register_converter(ClipConverter())
