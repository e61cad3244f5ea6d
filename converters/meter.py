"""METER-style export (edge-vl-mini): inputs ``input_ids``, ``attention_mask``, ``pixel_values``,
output ``logits``.

The whole model goes into one IR, image encoder included: training runs on cached image-encoder
features, but the device gets raw pixels. Skipped text and fusion layers take the
``x + A_skip(x)`` branch while tracing, so their weights never enter the IR.
"""

from __future__ import annotations

from converters.base import Converter
from converters.registry import register_converter


class MeterConverter(Converter):
    family_name = "meter"


register_converter(MeterConverter())
