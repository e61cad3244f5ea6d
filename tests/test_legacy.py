"""The legacy runtime profile (OpenVINO 2025.4, for CPUs without AVX2) against the default one.

- A bundle built here with the default OpenVINO loads in a separate environment with the legacy
  OpenVINO and gives the same logits.
- Under ``qemu-x86_64 -cpu Westmere`` (CPUID reports SSE4.2 but no AVX/AVX2), the default runtime's
  Predictor refuses with the documented message and the legacy runtime's predicts. qemu still
  executes AVX2 instructions, so this tests edge-vl's dispatch on what CPUID says, not the absence
  of AVX2 code in OpenVINO.

The legacy environment is created once in ``<repo>/.venv-legacy`` (``pip install -e ".[legacy]"``,
from the package registry). ``qemu-x86_64`` comes from Debian's ``qemu-user``; ``.ci/run`` installs
it, and without it the emulation test is skipped with that reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_vl import Predictor

REPO = Path(__file__).resolve().parents[1]
LEGACY_VENV = REPO / ".venv-legacy"
QEMU = shutil.which("qemu-x86_64")
QUESTIONS = ["what color is the shape?", "which shape does the image contain?"]

# prints the runtime's OpenVINO version, then saves the logits of two questions on one image
PREDICT = textwrap.dedent("""
    import sys, numpy as np
    from edge_vl import Predictor
    from edge_vl.runtime.profiles import active_profile, installed_openvino
    QUESTIONS = ["what color is the shape?", "which shape does the image contain?"]
    bundle, image, out = sys.argv[1:4]
    print(active_profile().name, installed_openvino(), flush=True)
    p = Predictor(bundle, threads=1)
    np.save(out, p.logits([image, image], QUESTIONS))
""")


def _run(python: str | Path, *args: str, emulate: bool = False, timeout: int = 600):
    command = [str(python), "-c", PREDICT, *args]
    if emulate:
        command = [QEMU, "-cpu", "Westmere", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def legacy_python() -> Path:
    """Python of an environment with edge-vl's runtime and the legacy OpenVINO (made once)."""
    python = LEGACY_VENV / "bin" / "python"
    probe = "from edge_vl.runtime.profiles import active_profile; print(active_profile().name)"
    if python.exists():
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if found.stdout.strip() == "legacy":
            return python
        shutil.rmtree(LEGACY_VENV)
    subprocess.run([sys.executable, "-m", "venv", str(LEGACY_VENV)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-e", f"{REPO}[legacy]"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, f"could not install the legacy runtime:\n{install.stderr[-3000:]}"
    return python


@pytest.fixture(scope="module")
def expected(tiny_bundle, sample, tmp_path_factory) -> np.ndarray:
    """Logits of the default runtime, in this process."""
    predictor = Predictor(tiny_bundle, threads=1)
    return predictor.logits([sample[0]] * 2, QUESTIONS)


def test_default_bundle_loads_under_the_legacy_runtime(
    legacy_python, tiny_bundle, sample, expected, tmp_path
):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert "legacy" in manifest["runtime"]["profiles"]
    out = tmp_path / "legacy.npy"
    result = _run(legacy_python, str(tiny_bundle), str(sample[0]), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("legacy 2025.4"), result.stdout
    assert manifest["versions"]["openvino"].startswith("2026")  # built with the default runtime
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-5)


@pytest.mark.skipif(QEMU is None, reason="no qemu-x86_64 (Debian: apt-get install qemu-user; .ci/run does)")
def test_cpu_without_avx2_under_emulation(legacy_python, tiny_bundle, sample, expected, tmp_path):
    refused = _run(sys.executable, str(tiny_bundle), str(sample[0]), str(tmp_path / "x.npy"), emulate=True)
    assert refused.returncode != 0
    assert "CPUError" in refused.stderr
    assert "lacks AVX2, which the default runtime" in refused.stderr
    assert 'pip install "edge-vl[legacy]"' in refused.stderr
    assert not (tmp_path / "x.npy").exists()

    out = tmp_path / "legacy.npy"
    predicted = _run(legacy_python, str(tiny_bundle), str(sample[0]), str(out), emulate=True)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert predicted.stdout.startswith("legacy 2025.4")
    # OpenVINO picks its SSE4.2 kernels from CPUID: other summation orders, same answers
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-4)
