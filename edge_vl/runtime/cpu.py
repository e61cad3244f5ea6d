"""What the CPU can do, read from CPUID (through numpy) before OpenVINO is loaded.

OpenVINO 2026 requires AVX2 on x86; loading it on an older CPU dies with "Illegal instruction",
so the Predictor checks first and raises a :class:`~edge_vl.errors.CPUError` that says what to do.
"""

from __future__ import annotations

import platform
from functools import cache

from edge_vl.errors import CPUError

#: ISA features that decide what OpenVINO can run and how fast (names as numpy reports them).
RELEVANT_FLAGS = ("SSE42", "AVX", "AVX2", "FMA3", "AVX512F", "AVX512VNNI", "AVX512BF16", "AVX512FP16")
#: x86 features the installed OpenVINO (2026.x) needs.
REQUIRED_FLAGS = ("AVX2",)


@cache
def cpu_flags() -> dict[str, bool]:
    """Relevant ISA flags of this CPU, from CPUID as numpy detected it at import (AMX is added
    from /proc/cpuinfo, which numpy does not report)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
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


def check_cpu(flags: dict[str, bool] | None = None) -> None:
    """Raise :class:`CPUError` if this x86 CPU lacks what OpenVINO 2026 needs (AVX2).

    Non-x86 machines (ARM) are not checked: OpenVINO has its own ARM build.
    """
    if flags is None:
        if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
            return
        flags = cpu_flags()
    missing = [f for f in REQUIRED_FLAGS if not flags.get(f, False)]
    if missing:
        present = ", ".join(k for k, v in flags.items() if v) or "none of the relevant ones"
        raise CPUError(
            f"this CPU lacks {', '.join(missing)}, which OpenVINO 2026 requires (it has: {present}). "
            "OpenVINO 2025.4 is the last release that runs on SSE4.2-only CPUs; run this bundle on an "
            "AVX2 machine, or use a runtime pinned to openvino 2025.4."
        )


@cache
def openvino_core():
    """The process's one ``openvino.Core``, created after :func:`check_cpu`.

    Every compile and read goes through it: a second ``Core`` in one process can crash it
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
