"""Speed and memory of a bundle on this machine (imports no torch).

Measured in one process, warm-up excluded: cold start (bundle verification + compile + first
inference), synchronous latency percentiles at batch ``batch``, throughput with OpenVINO's optimal
number of asynchronous requests (THROUGHPUT hint), peak resident memory, and the machine (CPU,
cores, ISA flags, OpenVINO version, the precision OpenVINO actually executes). Inputs are
deterministic dummy tensors of the bundle's input spec, so preprocessing is not timed.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_vl.runtime.cpu import cpu_flags, cpu_name, openvino_core


def benchmark(
    bundle: str | Path,
    *,
    threads: int | None = None,
    batch: int = 1,
    duration: float = 10.0,
    min_iterations: int = 20,
) -> dict[str, Any]:
    """Measure ``bundle``; ``duration`` seconds each for the latency and the throughput phase."""
    import openvino as ov

    from edge_vl.runtime.predictor import Predictor

    start = time.perf_counter()
    predictor = Predictor(bundle, threads=threads, warmup=True)
    cold_ms = (time.perf_counter() - start) * 1e3
    feed = predictor.dummy_inputs(batch)

    times = []
    deadline = time.perf_counter() + duration / 2
    while time.perf_counter() < deadline or len(times) < min_iterations:
        t0 = time.perf_counter()
        predictor.run(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    lat = np.asarray(times)

    speed = throughput(predictor.model, feed, threads=threads, duration=duration / 2)
    executed = predictor.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return {
        "bundle": str(bundle),
        "precision": predictor.bundle.manifest.model.precision,
        "executed_precision": executed,
        "batch": batch,
        "threads": threads,
        "cold_start_ms": cold_ms,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "mean": float(lat.mean()),
            "min": float(lat.min()),
            "iterations": len(lat),
        },
        "throughput": speed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "flags": cpu_flags(),
            "openvino": ov.get_version(),
        },
    }


def throughput(
    model, feed: dict[str, np.ndarray], *, threads: int | None = None, duration: float = 5.0
) -> dict[str, Any]:
    """Inferences per second of an IR path or ``ov.Model`` with an ``AsyncInferQueue`` of
    OpenVINO's optimal size (THROUGHPUT hint, f32 inference), one warm-up per request."""
    import openvino as ov

    from edge_vl.runtime.predictor import compile_config

    config = compile_config("throughput", threads)
    source = str(model) if isinstance(model, (str, Path)) else model
    compiled = openvino_core().compile_model(source, "CPU", config)
    queue = ov.AsyncInferQueue(compiled, 0)
    requests = len(queue)
    for _ in range(requests):  # warm-up, one per request
        queue.start_async(feed)
    queue.wait_all()
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration or done < requests * 2:
        queue.start_async(feed)
        done += 1
    queue.wait_all()
    elapsed = time.perf_counter() - start
    del queue  # its requests go before ``compiled`` (see compile_latency)
    batch = len(next(iter(feed.values())))
    return {"requests": requests, "inferences_per_s": done / elapsed, "samples_per_s": done * batch / elapsed}


def compile_latency(model, threads: int | None = None):
    """An IR path or ``ov.Model`` compiled with the LATENCY hint (f32), as edge-vl times models.

    Keep the returned compiled model referenced for as long as any infer request made from it,
    and release the requests first: a CI run (OpenVINO 2026.4.1) crashed with a segmentation fault
    just as it released a request that had outlived the compiled model it came from."""
    from edge_vl.runtime.predictor import compile_config

    source = str(model) if isinstance(model, (str, Path)) else model
    return openvino_core().compile_model(source, "CPU", compile_config("latency", threads))


def median_infer_ms(request, feed: dict[str, np.ndarray], runs: int) -> float:
    """Median synchronous latency (ms) of ``request`` on ``feed`` after one warm-up call."""
    request.infer(feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def median_latency_ms(
    xml: str | Path, feed: dict[str, np.ndarray], *, runs: int = 30, threads: int | None = None
) -> float:
    """Median synchronous latency (ms) of an IR on ``feed`` after one warm-up, f32 inference."""
    compiled = compile_latency(xml, threads)
    request = compiled.create_infer_request()
    try:
        return median_infer_ms(request, feed, runs)
    finally:
        del request  # before ``compiled`` (see compile_latency)


#: the reference graph of :func:`precision_probe`: a stack of transformer-sized MLP blocks
PROBE_SHAPE = {"tokens": 64, "hidden": 384, "intermediate": 1536, "blocks": 4}


def precision_probe(*, threads: int | None = None, runs: int = 50) -> dict[str, Any]:
    """Batch-1 latency of one fixed reference graph in FP32 and in INT8 on this machine.

    The graph (``PROBE_SHAPE``: ReLU → MatMul → ReLU → MatMul blocks with residuals, seeded
    weights) is built with OpenVINO's opset, so this runs on any edge-vl install, torch-free. The
    INT8 variant has FakeQuantize nodes as NNCF writes them (unsigned 8-bit activations, symmetric
    255-level weights), so OpenVINO runs INT8 kernels; ``int8_layers`` counts the matrix products
    that really executed in 8 bits. The ratio tells how much INT8 pays on this CPU; a build reads it
    from a saved target profile (``edge-vl bench --profile``) to pick a precision for that target.
    """
    shape = (1, PROBE_SHAPE["tokens"], PROBE_SHAPE["hidden"])
    feed = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    result: dict[str, Any] = {}
    for name in ("fp32", "int8"):
        compiled = compile_latency(_probe_model(quantized=name == "int8"), threads)
        result[f"{name}_ms"] = median_infer_ms(compiled.create_infer_request(), feed, runs)
        if name == "int8":
            result["int8_layers"] = _int8_layers(compiled)
    result["int8_speedup"] = result["fp32_ms"] / result["int8_ms"]
    result["graph"] = dict(PROBE_SHAPE)
    return result


def _int8_layers(compiled) -> int:
    """Matrix-product layers of a compiled model that execute with 8-bit inputs."""
    count = 0
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        count += kind in ("FullyConnected", "MatMul") and precision in ("u8", "i8")
    return count


def _probe_model(*, quantized: bool):
    import openvino as ov
    from openvino import opset13 as ops

    rng = np.random.default_rng(1)
    t, d, f = PROBE_SHAPE["tokens"], PROBE_SHAPE["hidden"], PROBE_SHAPE["intermediate"]
    x = ops.parameter([1, t, d], np.float32, name="x")

    def fake_quantize(node, low: float, high: float, levels: int):
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        return ops.fake_quantize(node, lo, hi, lo, hi, levels)

    def dense(node, n_in: int, n_out: int):  # node is a ReLU output: non-negative
        weight = ops.constant((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32))
        if quantized:
            node, weight = fake_quantize(node, 0.0, 4.0, 256), fake_quantize(weight, -0.5, 0.5, 255)
        return ops.matmul(node, weight, False, False)

    h = x
    for _ in range(PROBE_SHAPE["blocks"]):
        h = ops.add(h, dense(ops.relu(dense(ops.relu(h), d, f)), f, d))
    return ov.Model([h], [x], "precision_probe")


def target_profile(report: dict[str, Any], *, threads: int | None = None) -> dict[str, Any]:
    """A target profile (what ``edge-vl bench --profile`` saves): the bench ``report`` plus the
    runtime profile and the :func:`precision_probe` of this machine."""
    from edge_vl.runtime.profiles import active_profile

    return {
        **report,
        "runtime_profile": active_profile().name,
        "precision_probe": precision_probe(threads=threads),
    }


def read_target_profile(path: str | Path) -> dict[str, Any]:
    """Load a saved target profile, checking the fields a build uses."""
    import json

    from edge_vl.errors import DataError

    try:
        profile = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read the target profile: {e}", path=str(path)) from None
    needed = {
        "machine.flags": (profile.get("machine") or {}).get("flags"),
        "precision_probe.fp32_ms": (profile.get("precision_probe") or {}).get("fp32_ms"),
        "precision_probe.int8_ms": (profile.get("precision_probe") or {}).get("int8_ms"),
        "runtime_profile": profile.get("runtime_profile"),
    }
    missing = [k for k, v in needed.items() if v is None]
    if missing:
        raise DataError(
            f"not a target profile: missing {', '.join(missing)} (write one on the target with "
            "`edge-vl bench BUNDLE --profile FILE`)",
            path=str(path),
        )
    return profile
