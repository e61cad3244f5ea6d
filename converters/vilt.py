"""ViLT export: inputs ``input_ids``, ``attention_mask`` (text length fixed), ``pixel_values``
(fixed image size), output ``logits``.

No patch is needed at export time: HF's ``ViltEmbeddings.visual_embed`` samples patches at random
with ``multinomial`` and cannot be traced, so the ViLT family's own forward
(:meth:`edge_vl.architectures.vilt.ViltFamily.forward`) embeds patches in order with an all-ones
pixel mask — for training as well, so the exported graph computes what was trained. Skipped
blocks take the ``h + A_skip(h)`` branch while tracing, so their weights never enter the IR.
"""

from __future__ import annotations

from converters.base import Converter
from converters.registry import register_converter


class ViltConverter(Converter):
    family_name = "vilt"


register_converter(ViltConverter())
