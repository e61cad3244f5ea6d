"""Every named choice edge-vl offers, in one place with no dependencies: the CLI's options, the
build configuration's checks and the bundle manifest's schema all read them here (as NNCF keeps
its choices in a dependency-free ``parameters`` module)."""

from __future__ import annotations

from collections.abc import Iterable

#: weights a bundle can hold (``fp16``: weights stored in half precision, computed in f32)
PRECISIONS = ("fp32", "fp16", "int8")
#: what a build can be asked for: a precision, or ``auto`` (measured: the fastest within the drop)
BUILD_PRECISIONS = (*PRECISIONS, "auto")
#: how the DAS search scores candidates: ``clean`` (edge-vl's) or ``paper`` (the authors')
SEARCH_MODES = ("clean", "paper")
#: what ranks the layers after a search (``gates``: the paper's; the others are edge-vl's)
ESTIMATORS = ("gates", "effects", "prior")
#: task loss → how the runtime turns logits into scores
LOSS_SCORES = {"cross-entropy": "softmax", "vqa-bce": "sigmoid", "focal": "softmax"}
LOSSES = tuple(LOSS_SCORES)
#: how a head's logits become scores
HEAD_KINDS = ("sigmoid", "softmax")
#: mixed precision of training on CUDA
AMP_MODES = ("off", "bf16", "fp16")
#: OpenVINO's performance hints the Predictor accepts
PERFORMANCE_HINTS = ("latency", "throughput")
#: image resampling filters of the preprocessing
RESAMPLE_NAMES = ("nearest", "bilinear", "bicubic", "lanczos")


def check_choice(value: object, choices: Iterable[str], name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` and the choices when ``value`` is not one of them."""
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")
