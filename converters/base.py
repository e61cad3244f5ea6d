"""Shared export machinery: torch (retained subgraph) → OpenVINO IR, checked against torch.

A family's converter supplies only what export adds to the family: a traceable wrapper with
named inputs (:meth:`Converter.export_module`). Conversion, saving, naming the outputs, version
stamping and the parity check are shared here and never overridden.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from edge_vl.architectures.base import ArchitectureFamily
from edge_vl.architectures.quiet import quiet_transformers
from edge_vl.bundle import TensorSpec
from edge_vl.errors import ExportError
from edge_vl.fileio import free_space
from edge_vl.runtime.cpu import openvino_core

#: FP32 parity tolerance between torch and OpenVINO logits: max absolute difference per unit of
#: logit scale (the largest |logit|, at least 1)
FP32_TOLERANCE = 1e-4
_OV_TYPES = {"int64": "i64", "int32": "i32", "float32": "f32"}


@dataclass(frozen=True)
class ExportResult:
    xml: Path
    bin: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parity_max_abs: float
    parity_samples: int


class PositionalInputs(nn.Module):
    """Calls ``family.forward`` with named inputs received positionally, for tracing."""

    def __init__(self, family: ArchitectureFamily, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.family, self.model, self.names = family, model, list(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.family.forward(self.model, dict(zip(self.names, tensors, strict=True)))


class Converter:
    """Per-family export knowledge over the shared conversion. A subclass sets ``family_name`` and
    overrides :meth:`export_module` only when export needs more than the family's own forward
    (e.g. a tower split or a patched submodule)."""

    family_name: ClassVar[str]
    output_name: ClassVar[str] = "logits"

    def export_module(
        self, family: ArchitectureFamily, model: nn.Module, inputs: Sequence[TensorSpec]
    ) -> nn.Module:
        """A traceable module taking ``inputs`` positionally and returning the logits."""
        return PositionalInputs(family, model, [spec.name for spec in inputs])

    def export(
        self,
        family: ArchitectureFamily,
        model: nn.Module,
        inputs: Sequence[TensorSpec],
        sample: Mapping[str, torch.Tensor],
        out_dir: Path,
        *,
        name: str = "model",
        tolerance: float = FP32_TOLERANCE,
        versions: Mapping[str, str] | None = None,
    ) -> ExportResult:
        """Convert ``model`` (its current skip set) to ``out_dir/name.xml`` and check parity on ``sample``.

        Raises:
            ExportError: conversion failed, or OpenVINO's logits differ from torch's by more than
                ``tolerance`` on ``sample``.
        """
        import openvino as ov

        model.eval()
        module = self.export_module(family, model, inputs).eval()
        example = tuple(sample[spec.name][:2] for spec in inputs)
        try:
            with torch.no_grad(), quiet_transformers(), warnings.catch_warnings():
                # shape checks in HF code become constants in the trace: intended, shapes are static
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                ov_model = ov.convert_model(
                    module,
                    example_input=example,
                    input=[
                        (ov.PartialShape(list(s.shape)), getattr(ov.Type, _OV_TYPES[s.dtype])) for s in inputs
                    ],
                )
        except Exception as e:  # OpenVINO raises several unrelated types here
            raise ExportError(f"OpenVINO conversion of the {family.name} model failed: {e}") from e
        for port, spec in zip(ov_model.inputs, inputs, strict=True):
            port.get_tensor().set_names({spec.name})
        ov_model.outputs[0].get_tensor().set_names({self.output_name})
        for key, value in (versions or {}).items():
            ov_model.set_rt_info(str(value), ["edge_vl", key])
        xml = Path(out_dir) / f"{name}.xml"
        save_model(ov_model, xml)
        max_abs = self.parity(module, xml, {s.name: sample[s.name] for s in inputs}, tolerance=tolerance)
        width = int(ov_model.outputs[0].get_partial_shape()[1].get_length())
        outputs = [TensorSpec(self.output_name, (-1, width), "float32")]
        return ExportResult(
            xml=xml,
            bin=xml.with_suffix(".bin"),
            inputs=list(inputs),
            outputs=outputs,
            parity_max_abs=max_abs,
            parity_samples=len(sample[inputs[0].name]),
        )

    @staticmethod
    def parity(
        module: nn.Module, xml: Path, sample: Mapping[str, torch.Tensor], *, tolerance: float
    ) -> float:
        """Max |torch − OpenVINO| over ``sample``, OpenVINO pinned to f32; raises if above
        ``tolerance`` times the logits' scale (their largest magnitude, at least 1): float32
        rounding grows with the size of the values, and a fixed bound failed a sound export
        (1.56e-4 on the full model timed by a DAS variant's build, after its fine-tune)."""

        compiled = openvino_core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        with torch.no_grad():
            expected = module(*sample.values()).numpy()
        got = compiled({k: v.numpy() for k, v in sample.items()})[0]
        max_abs = float(np.max(np.abs(expected - got)))
        scale = max(1.0, float(np.max(np.abs(expected))))
        if not max_abs <= tolerance * scale:
            raise ExportError(
                f"{xml.name}: OpenVINO output differs from torch by {max_abs:.3g} "
                f"(tolerance {tolerance:g} × logit scale {scale:.3g}) on {len(expected)} samples"
            )
        return max_abs


def save_model(model, xml: Path, *, compress_to_fp16: bool = False) -> None:
    """``ov.save_model`` that names the path and the free space when the disk is full (OpenVINO
    itself says only ``basic_ios::clear: iostream error``)."""
    import openvino as ov

    try:
        ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
    except (RuntimeError, OSError) as e:
        raise ExportError(f"could not write {xml} ({free_space(xml.parent)}): {e}") from e
