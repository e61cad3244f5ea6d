"""Export parity: OpenVINO logits against torch's, with a tolerance that scales with the logits."""

from __future__ import annotations

import openvino as ov
import pytest
import torch
from edge_vl.converters.export import FP32_TOLERANCE, parity
from torch import nn

from edge_vl.errors import ExportError


class Offset(nn.Module):
    """``scale * x + offset``: torch's side of a parity check whose OpenVINO side computes ``scale * x``."""

    def __init__(self, scale: float, offset: float):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.offset


def _ir(tmp_path, scale: float):
    with torch.no_grad():
        model = ov.convert_model(Offset(scale, 0.0), example_input=torch.ones(2, 4))
    xml = tmp_path / f"scale{scale:g}.xml"
    ov.save_model(model, str(xml))
    return xml


@pytest.mark.parametrize(("scale", "error", "passes"), [
    (1.0, 0.5 * FP32_TOLERANCE, True),
    (1.0, 5 * FP32_TOLERANCE, False),
    (50.0, 20 * FP32_TOLERANCE, True),   # 2e-3 on logits of 50: float32 noise, not a bad export
    (50.0, 80 * FP32_TOLERANCE, False),
])  # fmt: skip
def test_parity_tolerance_scales_with_the_logits(tmp_path, scale, error, passes):
    sample = {"x": torch.ones(2, 4)}
    xml = _ir(tmp_path, scale)
    check = lambda: parity(Offset(scale, error), xml, sample, tolerance=FP32_TOLERANCE)  # noqa: E731
    if passes:
        assert check() == pytest.approx(error, rel=1e-2)
    else:
        with pytest.raises(ExportError, match="differs from torch"):
            check()
