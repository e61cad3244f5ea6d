"""Latency of a bundle on this machine (imports no torch).

This first version measures cold start (bundle verification + compile + warm-up inference) and
batch-1 synchronous latency percentiles on preprocessed dummy inputs; throughput, memory and the
torch comparison are planned (issue: benchmarks).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_vl.runtime.cpu import cpu_flags, cpu_name


def benchmark(bundle: str | Path, *, threads: int | None = None, iterations: int = 50) -> dict[str, Any]:
    """Cold start and latency percentiles (milliseconds) of ``bundle`` at batch 1."""
    import openvino as ov

    from edge_vl.runtime.predictor import Predictor

    start = time.perf_counter()
    predictor = Predictor(bundle, threads=threads, warmup=True)
    cold_ms = (time.perf_counter() - start) * 1e3
    feed = predictor._dummy_inputs()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        predictor._run(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    arr = np.asarray(times)
    return {
        "bundle": str(bundle),
        "precision": predictor.bundle.manifest["model"].get("precision", "fp32"),
        "threads": threads,
        "iterations": iterations,
        "cold_start_ms": cold_ms,
        "latency_ms": {
            "p50": float(np.percentile(arr, 50)),
            "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)),
            "mean": float(arr.mean()),
            "min": float(arr.min()),
        },
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "flags": cpu_flags(),
            "openvino": ov.get_version(),
        },
    }


def median_latency_ms(
    xml: str | Path, feed: dict[str, np.ndarray], *, runs: int = 30, threads: int | None = None
) -> float:
    """Median synchronous latency (ms) of an IR on ``feed`` after one warm-up, f32 inference."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = ov.Core().compile_model(str(xml), "CPU", config).create_infer_request()
    request.infer(feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
