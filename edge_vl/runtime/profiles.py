"""Runtime profiles: which OpenVINO release line a device runs, what CPU it needs, which bundles it loads.

- ``default`` — ``pip install edge-vl``: OpenVINO 2026.x, which requires AVX2 on x86
  (openvinotoolkit/openvino#38157: SSE code removed in 2026).
- ``legacy`` — ``pip install "edge-vl[legacy]"``: OpenVINO 2025.4.x, the last release line for
  SSE4.2-only CPUs (Celeron J/N, Atom x6000E, Pentium G4xxx, Xeon E5 v1/v2).

A bundle lists the profiles that can load it (manifest ``runtime.profiles``), decided at build time
from the operator sets its IR files use: an IR is read by any release that knows all its opsets
(OpenVINO 2025.4 knows opset1–16, 2026.x adds opset17). A CI test loads a bundle built with the
default runtime under the legacy one and compares logits (``tests/test_legacy.py``).

Nothing here imports openvino: the profile is read from the installed package's metadata, so a
CPU that cannot run OpenVINO gets an explanation instead of "Illegal instruction".
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from edge_vl.errors import IncompatibleBundleError
from edge_vl.manifest import RuntimeInfo

if TYPE_CHECKING:
    from edge_vl.manifest import Manifest


@dataclass(frozen=True)
class RuntimeProfile:
    """One supported OpenVINO release line on the device."""

    name: str
    #: the OpenVINO requirement this profile installs
    openvino: str
    #: how a user gets it
    install: str
    #: x86 ISA features (numpy's names) its CPU plugin needs
    required_flags: tuple[str, ...]
    #: highest OpenVINO operator set (``opsetN``) its IR reader knows
    max_opset: int
    #: release lines (major, minor) covered, inclusive lower / exclusive upper bound
    releases: tuple[tuple[int, int], tuple[int, int]]

    def covers(self, version: str) -> bool:
        low, high = self.releases
        return low <= release(version) < high


PROFILES: dict[str, RuntimeProfile] = {
    "default": RuntimeProfile(
        name="default",
        openvino="openvino>=2026.0,<2027",
        install="pip install edge-vl",
        required_flags=("AVX2",),
        max_opset=17,
        releases=((2026, 0), (2027, 0)),
    ),
    "legacy": RuntimeProfile(
        name="legacy",
        openvino="openvino>=2025.4,<2026",
        install='pip install "edge-vl[legacy]"',
        required_flags=("SSE42",),
        max_opset=16,
        releases=((2025, 4), (2026, 0)),
    ),
}


def release(version: str) -> tuple[int, int]:
    """``"2025.4.1-20426-…"`` → ``(2025, 4)``; unparsable versions give ``(0, 0)``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def installed_openvino() -> str:
    """Version of the installed openvino package, read without importing it."""
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        raise IncompatibleBundleError(
            "openvino is not installed; install edge-vl's runtime: pip install edge-vl "
            '(or pip install "edge-vl[legacy]" on CPUs without AVX2)'
        ) from None


def profile_for(version: str) -> RuntimeProfile | None:
    """The profile whose release line ``version`` belongs to (None: an unsupported release)."""
    return next((p for p in PROFILES.values() if p.covers(version)), None)


def active_profile(version: str | None = None) -> RuntimeProfile:
    """The profile of the installed OpenVINO (or of ``version``); raises if its release line is
    not supported."""
    version = version or installed_openvino()
    profile = profile_for(version)
    if profile is None:
        supported = "; ".join(f"{p.name}: {p.openvino} ({p.install})" for p in PROFILES.values())
        raise IncompatibleBundleError(
            f"OpenVINO {version} is not a runtime edge-vl supports; install one of: {supported}"
        )
    return profile


def ir_opsets(xml: str | Path) -> set[str]:
    """The ``version`` attribute of every layer in an OpenVINO IR file (``"opset1"``, …)."""
    versions = set()
    for _, element in ElementTree.iterparse(str(xml)):
        if element.tag == "layer":
            versions.add(element.get("version", ""))
        element.clear()
    return versions


def loadable_profiles(xml_files: Iterable[str | Path]) -> RuntimeInfo:
    """Which profiles can read all of ``xml_files``, and the newest opset they use.

    An IR with a layer outside the standard opsets (an extension's op) is left to the profile that
    wrote it, ``default``.
    """
    highest, custom = 0, False
    for xml in xml_files:
        for version in ir_opsets(xml):
            match = re.fullmatch(r"opset(\d+)", version)
            if match:
                highest = max(highest, int(match.group(1)))
            else:
                custom = True
    names = [
        p.name for p in PROFILES.values() if p.max_opset >= highest and (not custom or p.name == "default")
    ]
    return RuntimeInfo(profiles=tuple(names), max_opset=highest)


def check_bundle_runtime(manifest: Manifest, where: Path) -> None:
    """Refuse a bundle the installed runtime cannot load, saying which profile to install."""
    version = installed_openvino()
    profile = active_profile(version)
    runtime = manifest.runtime
    if profile.name not in runtime.profiles:
        known = [PROFILES[n] for n in runtime.profiles if n in PROFILES]
        options = "; ".join(f"{p.install} ({p.openvino})" for p in known)
        raise IncompatibleBundleError(
            f"{where}: this bundle's IR uses opset{runtime.max_opset} operators, which the "
            f"{profile.name} runtime (OpenVINO {version}) cannot read; it loads with: "
            f"{options or 'no supported runtime'}"
        )
