"""Text buckets: the retained model exported again at shorter text lengths, so the Predictor can
run a batch on the shortest length that holds its longest text (only padding is cut). Each length
is parity-checked like the main export, then FP16-compressed if the bundle is FP16; INT8 bundles get
none (each length would be quantized on its own and answers would differ from the full length).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from edge_vl.converters.export import export
from edge_vl.converters.precision import compress_fp16_in_place

from edge_vl.manifest import TEXT_INPUTS, TensorSpec, TextBucket


def export_text_buckets(
    family,
    model,
    inputs: Sequence[TensorSpec],
    sample: Mapping[str, torch.Tensor],
    lengths: Sequence[int],
    out_dir: Path,
    *,
    precision: str = "fp32",
    versions: Mapping[str, str] | None = None,
    echo: Callable[[str], None] = print,
) -> list[TextBucket]:
    """Export ``model`` at each of ``lengths`` (shorter than its text length) into ``out_dir``."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"text buckets are exported in fp32 or fp16 only, not {precision}")
    buckets = []
    for length in sorted(set(lengths)):
        specs = [replace(s, shape=(s.shape[0], length)) if s.name in TEXT_INPUTS else s for s in inputs]
        cut = {k: (v[:, :length] if k in TEXT_INPUTS else v) for k, v in sample.items()}
        exported = export(family, model, specs, cut, out_dir, name=f"model-t{length}", versions=versions)
        if precision == "fp16":
            compress_fp16_in_place(exported.xml)
        buckets.append(TextBucket(length, exported.xml.name, exported.bin.name, exported.parity_max_abs))
        echo(
            f"export: text bucket {length} tokens, OpenVINO vs torch max |diff| {exported.parity_max_abs:.2e}"
        )
    return buckets
