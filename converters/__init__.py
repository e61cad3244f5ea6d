"""Converters: the retained subgraph of an adapted model → OpenVINO IR (parity-checked against
torch), its precision (FP32, FP16 weights, NNCF INT8, chosen by measurement) and text buckets.
Build-time only: imports torch and openvino.
"""

from edge_vl.converters.export import FP32_TOLERANCE as FP32_TOLERANCE
from edge_vl.converters.export import ExportResult as ExportResult
from edge_vl.converters.export import export as export
from edge_vl.converters.export import latency_with_skipped as latency_with_skipped
from edge_vl.converters.export import temporary_export as temporary_export
