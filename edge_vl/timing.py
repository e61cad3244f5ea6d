"""Timing of OpenVINO models, shared by the build (precision choice, latency budgets, the
manifest's latency) and ``edge-vl bench``: compile as edge-vl runs models, median latency,
throughput, interleaved comparisons, and the FP32-vs-INT8 reference probe. Imports no torch.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edge_vl.runtime.cpu import openvino_core


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


def spread(times: list[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile of ``times``."""
    return {
        "median": float(np.median(times)),
        "p10": float(np.percentile(times, 10)),
        "p90": float(np.percentile(times, 90)),
    }


def interleaved(
    contenders: dict[str, Callable[[], Any]], runs: int, *, settle_s: float = 0.02, seed: int = 0
) -> dict[str, list[float]]:
    """Per-contender wall times (ms): one warm-up each, then ``runs`` rounds in a fresh random order
    (seeded), with a ``settle_s`` pause before each timed call. Without the pause, whatever runs
    right after torch competes with torch's still-spinning worker threads; with a fixed rotation
    that penalty would land on the same contender every round (measured: the demo bundle looked
    35 % slower than in isolation)."""
    names = list(contenders)
    for name in names:
        contenders[name]()
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(runs):
        for name in rng.sample(names, len(names)):
            time.sleep(settle_s)
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def interleaved_ir_latency(
    models: Mapping[str, str | Path],
    feeds: Mapping[str, Mapping[str, np.ndarray]],
    runs: int,
    threads: int | None = None,
) -> dict[str, list[float]]:
    """Batch-1 wall times (ms) of each IR on its feed ``feeds[name]`` in :func:`interleaved` rounds,
    so that a noisy spell of the machine slows them alike instead of deciding which one looks
    faster. A feed may hold more inputs than its IR names (one shared feed for a folded graph,
    which takes ``text_index``, and its tower, which takes tokens); each IR takes those it names."""
    compiled = {name: compile_latency(xml, threads) for name, xml in models.items()}
    requests = {name: c.create_infer_request() for name, c in compiled.items()}
    fed = {
        n: {name: feeds[n][name] for p in c.inputs for name in p.get_names() & feeds[n].keys()}
        for n, c in compiled.items()
    }
    contenders: dict[str, Callable[[], Any]] = {n: partial(r.infer, fed[n]) for n, r in requests.items()}
    try:
        return interleaved(contenders, runs)
    finally:
        contenders.clear()
        requests.clear()  # before ``compiled`` (see compile_latency)
