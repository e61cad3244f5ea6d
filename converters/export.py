"""Export: the retained subgraph of an adapted model → OpenVINO IR, parity-checked against torch.

One converter for every architecture family. What export needs from a family is its traceable
module (:meth:`~edge_vl.training.architectures.base.ArchitectureFamily.export_module`, the family's own
deterministic forward with named inputs unless a family overrides it); conversion, saving, input
and output names, version stamping and the parity check are the same for all. Skipped layers take
the ``x + A_skip(x)`` branch while tracing, so their weights never enter the IR.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_vl.errors import ExportError
from edge_vl.fileio import free_space
from edge_vl.manifest import FoldedTexts, TensorSpec
from edge_vl.runtime.cpu import openvino_core
from edge_vl.training.architectures.base import ArchitectureFamily
from edge_vl.training.architectures.quiet import quiet_transformers

#: FP32 parity tolerance between torch and OpenVINO logits: max absolute difference per unit of
#: logit scale (the largest |logit|, at least 1)
FP32_TOLERANCE = 1e-4
OUTPUT_NAME = "logits"
_OV_TYPES = {"int64": "i64", "int32": "i32", "float32": "f32"}


@dataclass(frozen=True)
class ExportResult:
    xml: Path
    bin: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parity_max_abs: float
    parity_samples: int


def export(
    family: ArchitectureFamily,
    model: nn.Module,
    inputs: Sequence[TensorSpec],
    sample: Mapping[str, torch.Tensor],
    out_dir: Path,
    *,
    name: str = "model",
    tolerance: float = FP32_TOLERANCE,
    versions: Mapping[str, str] | None = None,
    folded: FoldedTexts | None = None,
) -> ExportResult:
    """Convert ``model`` (its current skip set) to ``out_dir/name.xml`` and check parity on ``sample``.
    With ``folded``, the text tower's output for those texts is a constant of the graph, which takes
    ``text_index`` (:mod:`edge_vl.folding`).

    Raises:
        ExportError: conversion or saving failed, or OpenVINO's logits differ from torch's by more
            than ``tolerance`` on ``sample``.
    """
    import openvino as ov

    model.eval()
    module = family.export_module(model, [spec.name for spec in inputs], folded).eval()
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
    ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    for key, value in (versions or {}).items():
        ov_model.set_rt_info(str(value), ["edge_vl", key])
    xml = Path(out_dir) / f"{name}.xml"
    save_model(ov_model, xml)
    reference = None
    if folded is not None:  # compare with the model that runs its text tower, not the folded module
        with torch.no_grad(), quiet_transformers():
            reference = family.forward(model, dict(sample)).numpy()
    max_abs = parity(
        module, xml, {s.name: sample[s.name] for s in inputs}, tolerance=tolerance, reference=reference
    )
    width = int(ov_model.outputs[0].get_partial_shape()[1].get_length())
    return ExportResult(
        xml=xml,
        bin=xml.with_suffix(".bin"),
        inputs=list(inputs),
        outputs=[TensorSpec(OUTPUT_NAME, (-1, width), "float32")],
        parity_max_abs=max_abs,
        parity_samples=len(sample[inputs[0].name]),
    )


def parity(
    module: nn.Module,
    xml: Path,
    sample: Mapping[str, torch.Tensor],
    *,
    tolerance: float,
    reference: np.ndarray | None = None,
) -> float:
    """Max |torch − OpenVINO| over ``sample``, OpenVINO pinned to f32; raises if above
    ``tolerance`` times the logits' scale (their largest magnitude, at least 1): float32 rounding
    grows with the size of the values, and a fixed bound failed a sound export. ``reference``:
    torch's logits computed otherwise (default: ``module`` on ``sample``)."""
    compiled = openvino_core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with torch.no_grad():
        expected = module(*sample.values()).numpy() if reference is None else reference
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


@contextlib.contextmanager
def temporary_export(family, model, inputs, sample, skipped: Sequence[int], folded=None) -> Iterator[Path]:
    """Export ``model`` with the layers ``skipped`` to a temporary directory and yield the IR path
    (parity-checked like any export); the model's own skip set is restored afterwards. For timing
    variants of a model (full vs retained) without writing them anywhere."""
    before = family.skipped(model)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            family.set_skipped(model, skipped)
            yield export(family, model, inputs, sample, Path(tmp), folded=folded).xml
    finally:
        family.set_skipped(model, before)


def latency_with_skipped(family, model, inputs, sample, skipped: Sequence[int], folded=None) -> float:
    """Median batch-1 latency (ms, this machine) of ``model`` exported with the layers ``skipped``;
    the model's own skip set is restored afterwards."""
    from edge_vl.timing import median_latency_ms

    feed = {spec.name: sample[spec.name][:1].numpy() for spec in inputs}
    with temporary_export(family, model, inputs, sample, skipped, folded) as xml:
        return median_latency_ms(xml, feed)
