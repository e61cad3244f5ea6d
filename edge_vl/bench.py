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

from edge_vl.runtime.cpu import cpu_flags, cpu_name
from edge_vl.timing import precision_probe, throughput


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

    times: list[float] = []
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
        "inference_precision": executed,
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


def target_scale(target: dict[str, Any], echo=print) -> dict[str, float]:
    """Per-precision factors from latency here to latency on the ``target`` profile's machine: the
    ratio of the two machines' :func:`~edge_vl.timing.precision_probe` times (an estimate from one
    reference graph)."""
    here, there = precision_probe(), target["precision_probe"]
    scale = {p: there[f"{p}_ms"] / here[f"{p}_ms"] for p in ("fp32", "int8")}
    echo(
        f"precision: target {target['machine'].get('cpu', '?')}: latencies predicted as measured here "
        f"× {scale['fp32']:.2f} (fp32/fp16), × {scale['int8']:.2f} (int8), from the reference graph"
    )
    return scale
