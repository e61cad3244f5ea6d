"""ViLT export: a traceable wrapper with named inputs ``input_ids``, ``attention_mask``, ``pixel_values``.

The deterministic image embedding itself (patches in order, all-ones pixel mask, fixed size) is
the family's forward (:meth:`edge_vl.architectures.vilt.ViltFamily.forward`), which training uses
too; the converter only gives it a fixed positional signature for tracing. Skipped blocks take the
``h + A_skip(h)`` branch while tracing, so their weights never enter the IR: the IR is the
retained subgraph.
"""

from __future__ import annotations

import torch
from torch import nn

from converters.base import Converter
from converters.registry import register_converter
from edge_vl.architectures.base import ArchitectureFamily


class ViltExportModule(nn.Module):
    def __init__(self, family: ArchitectureFamily, model: nn.Module):
        super().__init__()
        self.family = family
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor):
        return self.family.forward(
            self.model,
            {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values},
        )


class ViltConverter(Converter):
    family_name = "vilt"

    def export_module(self, family: ArchitectureFamily, model: nn.Module) -> nn.Module:
        return ViltExportModule(family, model)


register_converter(ViltConverter())
