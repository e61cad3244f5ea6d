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

    speed = throughput(predictor.model_path, feed, threads=threads, duration=duration / 2)
    executed = predictor.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return {
        "bundle": str(bundle),
        "precision": predictor.bundle.manifest["model"].get("precision", "fp32"),
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
    xml: str | Path, feed: dict[str, np.ndarray], *, threads: int | None = None, duration: float = 5.0
) -> dict[str, Any]:
    """Inferences per second of an IR with an ``AsyncInferQueue`` of OpenVINO's optimal size
    (THROUGHPUT hint, f32 inference), one warm-up per request."""
    import openvino as ov

    from edge_vl.runtime.predictor import compile_config

    config = compile_config("throughput", threads)
    compiled = openvino_core().compile_model(str(xml), "CPU", config)
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
    batch = len(next(iter(feed.values())))
    return {"requests": requests, "inferences_per_s": done / elapsed, "samples_per_s": done * batch / elapsed}


def compile_latency_request(xml: str | Path, threads: int | None = None):
    """An infer request of the IR compiled with the LATENCY hint (f32), as edge-vl times models."""
    from edge_vl.runtime.predictor import compile_config

    compiled = openvino_core().compile_model(str(xml), "CPU", compile_config("latency", threads))
    return compiled.create_infer_request()


def median_latency_ms(
    xml: str | Path, feed: dict[str, np.ndarray], *, runs: int = 30, threads: int | None = None
) -> float:
    """Median synchronous latency (ms) of an IR on ``feed`` after one warm-up, f32 inference."""
    request = compile_latency_request(xml, threads)
    request.infer(feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
