"""Converters: the retained subgraph of an adapted model → OpenVINO IR, parity-checked against torch.

One module per architecture family (``vilt.py``, …) over the shared :class:`Converter`.
Build-time only: imports torch and openvino.
"""

from converters.base import FP32_TOLERANCE as FP32_TOLERANCE
from converters.base import Converter as Converter
from converters.base import ExportResult as ExportResult
from converters.registry import converter_for as converter_for
from converters.registry import register_converter as register_converter
from converters.registry import temporary_export as temporary_export
