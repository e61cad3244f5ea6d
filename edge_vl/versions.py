"""The versions of edge-vl and the libraries it builds with, as every artifact records them."""

from __future__ import annotations

import contextlib
from importlib import metadata

from edge_vl._version import __version__


def package_versions() -> dict[str, str]:
    """edge-vl's version and those of openvino, torch, transformers, tokenizers, numpy, nncf (the
    ones installed; read from package metadata, nothing is imported)."""
    out = {"edge_vl": __version__}
    for dist in ("openvino", "torch", "transformers", "tokenizers", "numpy", "nncf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out
