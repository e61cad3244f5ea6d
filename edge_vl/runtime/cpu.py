"""What the CPU can do, read from CPUID (through numpy) before OpenVINO is loaded.

OpenVINO 2026 requires AVX2 on x86; loading it on an older CPU dies with "Illegal instruction",
so the Predictor checks first against the installed runtime profile
(:mod:`edge_vl.runtime.profiles`) and raises a :class:`~edge_vl.errors.CPUError` that names the
CPU's flags and the profile to install.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

from edge_vl.errors import CPUError
from edge_vl.runtime.profiles import PROFILES, RuntimeProfile, active_profile

#: ISA features that decide what OpenVINO can run and how fast (names as numpy reports them).
RELEVANT_FLAGS = ("SSE42", "AVX", "AVX2", "FMA3", "AVX512F", "AVX512VNNI", "AVX512BF16", "AVX512FP16")


@cache
def cpu_flags() -> dict[str, bool]:
    """Relevant ISA flags of this CPU, from CPUID as numpy detected it at import (AMX is added
    from /proc/cpuinfo, which numpy does not report)."""
    import importlib

    try:
        features = importlib.import_module("numpy._core._multiarray_umath").__cpu_features__
    except ImportError:  # numpy < 2
        features = importlib.import_module("numpy.core._multiarray_umath").__cpu_features__
    flags = {name: bool(features.get(name, False)) for name in RELEVANT_FLAGS}
    flags["AMX"] = "amx_tile" in _proc_cpuinfo_flags()
    flags["AVX_VNNI"] = "avx_vnni" in _proc_cpuinfo_flags()
    return flags


def has_int8_dot_product(flags: dict[str, bool] | None = None) -> bool:
    """Whether the CPU has VNNI-class INT8 dot-product instructions (AVX512-VNNI, AVX-VNNI or
    AMX): what makes INT8 pay, and what NNCF's overflow fix is not needed for."""
    flags = cpu_flags() if flags is None else flags
    return any(flags.get(f, False) for f in ("AVX512VNNI", "AVX_VNNI", "AMX"))


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. under a container's CPU limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def machine_info() -> dict[str, Any]:
    """This machine as benchmark results record it: CPU name, usable cores and the relevant ISA
    flags (timings taken on different machines do not compare)."""
    return {"cpu": cpu_name(), "cores": usable_cores(), "flags": cpu_flags()}


def check_cpu(flags: dict[str, bool] | None = None, profile: RuntimeProfile | None = None) -> None:
    """Raise :class:`CPUError` if this x86 CPU lacks what the installed runtime profile needs
    (AVX2 for OpenVINO 2026, SSE4.2 for the legacy 2025.4 profile).

    Non-x86 machines (ARM) are not checked: OpenVINO has its own ARM build.
    """
    if flags is None:
        if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
            return
        flags = cpu_flags()
    profile = profile or active_profile()
    missing = [f for f in profile.required_flags if not flags.get(f, False)]
    if not missing:
        return
    present = ", ".join(k for k, v in flags.items() if v) or "none of the relevant ones"
    message = (
        f"this CPU ({cpu_name()}) lacks {', '.join(missing)}, which the {profile.name} runtime "
        f"(OpenVINO {profile.openvino.removeprefix('openvino')}) requires; it has: {present}. "
    )
    fits = [p for p in PROFILES.values() if all(flags.get(f, False) for f in p.required_flags)]
    if fits:
        message += f"Install the {fits[0].name} runtime instead: {fits[0].install}"
    else:
        message += "No OpenVINO release edge-vl supports runs on it (the oldest needs SSE4.2)."
    raise CPUError(message)


@cache
def openvino_core():
    """The process's one ``openvino.Core``, created after :func:`check_cpu`.

    Every compile and read goes through it, NNCF's too (``converters.precision.
    nncf_on_the_process_core``): a second ``Core`` in one process can crash it
    (openvinotoolkit/openvino#35338; seen here as a segfault after a few dozen compiles in the test
    suite). Per-model settings such as ``CACHE_DIR`` belong in ``compile_model``'s config, not on
    this shared object.
    """
    check_cpu()
    import openvino as ov

    return ov.Core()


def _proc_cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
