"""Precision of an exported model, chosen by measurement: FP32, FP16 weights, NNCF INT8, or ``auto``.

Works on the FP32 IR a family's converter wrote, so it knows nothing about architectures: adding
a family never touches this module. Every candidate is run by OpenVINO on the build's eval inputs
(accuracy, top-1 agreement with FP32) and timed at batch 1 on this machine; ``auto`` keeps the
fastest candidate whose accuracy is within ``max_accuracy_drop`` of FP32.

INT8 is NNCF post-training quantization calibrated on the task's own training inputs, with the
transformer model type (attention softmax/matmuls handled as NNCF recommends) and NNCF's overflow
fix (``OverflowFix``) on CPUs without VNNI, whose int8 dot product saturates (openvinotoolkit/nncf#1498).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edge_vl.converters.export import save_model

from edge_vl.build_records import PrecisionCandidate, PrecisionChoice
from edge_vl.errors import ExportError
from edge_vl.runtime.cpu import openvino_core

#: what ``auto`` compares (FP16 weights only shrink the file on CPUs: OpenVINO computes in f32/bf16)
AUTO_CANDIDATES = ("fp32", "int8")


@dataclass(frozen=True)
class Candidate:
    """One exported precision with what was measured on it."""

    precision: str
    xml: Path
    accuracy: float
    #: share of eval inputs whose top-1 answer equals the FP32 model's
    agreement_with_fp32: float
    latency_ms: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("xml")
        return out


def compress_fp16(xml: Path, out_dir: Path, *, name: str = "model-fp16") -> Path:
    """The same graph with FP16 weights (decompressed to f32 at load time on CPUs)."""

    target = out_dir / f"{name}.xml"
    save_model(openvino_core().read_model(str(xml)), target, compress_to_fp16=True)
    return target


def quantize_int8(
    xml: Path,
    calibration: Iterable[Mapping[str, np.ndarray]],
    out_dir: Path,
    *,
    vnni: bool,
    size: int,
    name: str = "model-int8",
) -> Path:
    """NNCF INT8 post-training quantization calibrated on ``calibration`` (batch-1 feeds)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    feeds = list(calibration)
    if not feeds:
        raise ExportError("INT8 needs calibration inputs; the training data gave none")
    try:
        with nncf_on_the_process_core():
            quantized = nncf.quantize(
                openvino_core().read_model(str(xml)),
                nncf.Dataset(feeds),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=min(size, len(feeds)),
                advanced_parameters=AdvancedQuantizationParameters(
                    overflow_fix=OverflowFix.DISABLE if vnni else OverflowFix.ENABLE
                ),
            )
    except Exception as e:  # NNCF raises several unrelated types
        raise ExportError(f"NNCF INT8 quantization failed: {e}") from e
    target = out_dir / f"{name}.xml"
    save_model(quantized, target)
    return target


@contextlib.contextmanager
def nncf_on_the_process_core() -> Iterator[None]:
    """While it runs, ``openvino.Core()`` returns the process's one Core. NNCF makes a new Core for
    every statistics pass (``nncf/openvino/engine.py``), and a second Core in one process can crash
    OpenVINO 2026 (openvinotoolkit/openvino#35338, ultralytics/ultralytics#25864)."""
    import openvino as ov

    core, own = openvino_core(), ov.Core
    ov.Core = lambda *args, **kwargs: core
    try:
        yield
    finally:
        ov.Core = own


def compress_fp16_in_place(xml: Path) -> None:
    """Replace the FP32 IR ``xml`` by its FP16-weight variant under the same file name (text buckets
    of an fp16 bundle; INT8 bundles carry no buckets, see :func:`edge_vl.pipeline.export_stage`)."""
    converted = compress_fp16(xml, xml.parent, name=f"{xml.stem}-fp16")
    for suffix in (".xml", ".bin"):
        shutil.move(converted.with_suffix(suffix), xml.with_suffix(suffix))


def eval_logits(xml: Path, batches: Iterable[Mapping[str, np.ndarray]]) -> np.ndarray:
    """Logits of the IR on ``batches`` (OpenVINO CPU, f32 for non-quantized ops)."""
    compiled = openvino_core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([compiled(dict(batch))[0] for batch in batches])


def evaluate(xml: Path, batches: Iterable[Mapping[str, np.ndarray]]) -> np.ndarray:
    """Top-1 predictions of the IR on ``batches``."""
    return np.argmax(eval_logits(xml, batches), axis=-1)


def measure(
    precision: str,
    xml: Path,
    batches: Callable[[], Iterable[Mapping[str, np.ndarray]]],
    labels: np.ndarray,
    reference: np.ndarray | None,
    feed: Mapping[str, np.ndarray],
    latency: Callable[[Path, Mapping[str, np.ndarray]], float],
) -> tuple[Candidate, np.ndarray]:
    """The candidate's accuracy, agreement with FP32 and latency, and its logits."""
    logits = eval_logits(xml, batches())
    predictions = np.argmax(logits, axis=-1)
    return Candidate(
        precision=precision,
        xml=xml,
        accuracy=float(np.mean(predictions == labels)),
        agreement_with_fp32=1.0 if reference is None else float(np.mean(predictions == reference)),
        latency_ms=latency(xml, feed),
        size_bytes=xml.stat().st_size + xml.with_suffix(".bin").stat().st_size,
    ), logits


def choose(
    candidates: Sequence[Candidate], max_accuracy_drop: float, *, required: str | None = None
) -> tuple[Candidate, str]:
    """The fastest candidate within ``max_accuracy_drop`` of FP32's accuracy, and why; with
    ``required`` (a precision the user asked for), that one if it is within the tolerance, whatever
    its speed, else FP32."""
    fp32 = next(c for c in candidates if c.precision == "fp32")
    ok = [c for c in candidates if c.accuracy >= fp32.accuracy - max_accuracy_drop]
    wanted = [c for c in ok if c.precision == required]
    best = wanted[0] if wanted else fp32 if required else min(ok, key=lambda c: c.latency_ms)
    refused = [c for c in candidates if c not in ok]
    if required and best is fp32:
        reason = f"fp32: {required} was not within {max_accuracy_drop:.1%} of fp32's accuracy"
    elif required == "fp16":  # a storage choice: CPUs compute in f32 either way, so no speed claim
        reason = (
            f"fp16 weights: accuracy {best.accuracy:.4f} against fp32's {fp32.accuracy:.4f} (within "
            f"{max_accuracy_drop:.1%}), {best.size_bytes / 1e6:.1f} MB instead of "
            f"{fp32.size_bytes / 1e6:.1f} MB"
        )
    elif required:
        pace = "faster" if best.latency_ms < fp32.latency_ms else "NOT faster"
        reason = (
            f"{best.precision}: as requested, within {max_accuracy_drop:.1%} of fp32's accuracy, "
            f"{pace} here ({best.latency_ms:.2f} ms vs fp32 {fp32.latency_ms:.2f} ms)"
        )
    else:
        reason = (
            f"{best.precision}: fastest within {max_accuracy_drop:.1%} of fp32's accuracy "
            f"({best.latency_ms:.2f} ms vs fp32 {fp32.latency_ms:.2f} ms)"
        )
    if refused:
        reason += "; refused: " + ", ".join(
            f"{c.precision} (accuracy {c.accuracy:.4f} vs fp32 {fp32.accuracy:.4f})" for c in refused
        )
    return best, reason


def select_precision(
    requested: str,
    fp32_xml: Path,
    out_dir: Path,
    *,
    eval_batches: Callable[[], Iterable[Mapping[str, np.ndarray]]],
    labels: np.ndarray,
    calibration: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None,
    calibration_size: int,
    vnni: bool,
    max_accuracy_drop: float,
    latency_scale: Mapping[str, float] | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[PrecisionChoice, np.ndarray]:
    """Export, evaluate and time the candidates of ``requested`` (``auto``: FP32 and INT8; a
    precision: it and FP32), install the chosen one as ``out_dir/model.xml``. ``latency_scale``
    (per precision) predicts latency on a target machine from latency here. Returns the choice
    as the manifest records it and the chosen model's logits on the eval batches.

    Raises:
        ExportError: requested INT8 lost more than ``max_accuracy_drop`` of FP32's accuracy (FP16
            weights that do ship FP32 instead: they only made the file smaller).
    """
    from edge_vl.timing import median_latency_ms

    def latency_ms(name: str) -> Callable[[Path, Any], float]:
        factor = 1.0 if latency_scale is None else latency_scale["int8" if name == "int8" else "fp32"]
        return lambda xml, feed: median_latency_ms(xml, feed) * factor

    feed = {n: v[:1] for n, v in next(iter(eval_batches())).items()}
    candidates: list[Candidate] = []
    logits: dict[str, np.ndarray] = {}
    reference = None
    for name in AUTO_CANDIDATES if requested == "auto" else ("fp32", requested):
        if name == "fp32":
            xml = fp32_xml
        elif name == "fp16":
            xml = compress_fp16(fp32_xml, out_dir)
        else:
            if calibration is None:
                raise ExportError("INT8 needs calibration inputs; the training data gave none")
            echo(
                f"precision: NNCF INT8 calibration on {calibration_size} training rows "
                f"({'VNNI' if vnni else 'no VNNI: overflow fix on'})"
            )
            xml = quantize_int8(fp32_xml, calibration(), out_dir, vnni=vnni, size=calibration_size)
        candidate, logits[name] = measure(name, xml, eval_batches, labels, reference, feed, latency_ms(name))
        reference = np.argmax(logits[name], axis=-1) if name == "fp32" else reference
        candidates.append(candidate)
        echo(
            f"precision: {name} accuracy {candidate.accuracy:.4f}, top-1 agreement with fp32 "
            f"{candidate.agreement_with_fp32:.4f}, {candidate.latency_ms:.2f} ms"
        )
    required = None if requested == "auto" else requested
    chosen, reason = choose(candidates, max_accuracy_drop, required=required)
    if required == "fp16" and chosen.precision != required:
        echo(f"precision: WARNING: {reason}; the bundle keeps fp32 weights")
    elif required and chosen.precision != required:
        raise ExportError(
            f"{required} was refused: {reason}; build with --precision fp32 or raise --max-accuracy-drop"
        )
    install(chosen, out_dir)
    echo(f"precision: {reason}")
    return PrecisionChoice(
        requested=requested,
        chosen=chosen.precision,
        reason=reason,
        max_accuracy_drop=max_accuracy_drop,
        vnni=vnni,
        candidates=tuple(PrecisionCandidate(**c.to_dict()) for c in candidates),
    ), logits[chosen.precision]


def numpy_batches(data, names: Sequence[str], size: int) -> Callable[[], Iterable[dict[str, np.ndarray]]]:
    """A re-iterable source of an :class:`~edge_vl.training.encoded.EncodedData`'s rows as numpy feeds of
    the inputs ``names``, ``size`` rows each."""

    def feed(i: int) -> dict[str, np.ndarray]:
        rows = data.batch(slice(i, i + size))
        return {n: v.numpy() for n, v in rows.items() if n in names}

    return lambda: (feed(i) for i in range(0, len(data), size))


def install(candidate: Candidate, staging: Path) -> None:
    """Make ``candidate`` the bundle's ``model.xml``/``model.bin``; remove the other candidates."""
    if candidate.precision != "fp32":
        for suffix in (".xml", ".bin"):
            shutil.move(candidate.xml.with_suffix(suffix), staging / f"model{suffix}")
    for path in staging.glob("model-*.*"):
        path.unlink()
