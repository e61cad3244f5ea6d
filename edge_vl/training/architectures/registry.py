"""Which architecture family handles a checkpoint, keyed by HF ``config.model_type``.

The built-in families are listed here by module and class and imported on first use, so a family
module depends on nothing but the shared contract. Third-party families join with
:func:`register_family`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edge_vl.errors import ModelError

if TYPE_CHECKING:
    from edge_vl.training.architectures.base import ArchitectureFamily

#: model_type → (module, class) of the built-in families
BUILTIN = {
    "vilt": ("edge_vl.training.architectures.vilt", "ViltFamily"),
    "edge_vl_mini": ("edge_vl.training.architectures.meter", "MeterFamily"),
    "clip": ("edge_vl.training.architectures.clip", "ClipFamily"),
}
_FAMILIES: dict[str, ArchitectureFamily] = {}


def register_family(family: ArchitectureFamily) -> ArchitectureFamily:
    """Make ``family`` available for its ``model_types``; a type that is already taken is an error."""
    for model_type in family.model_types:
        if model_type in _FAMILIES or model_type in BUILTIN:
            raise ValueError(f"model_type {model_type!r} is already handled by another family")
        _FAMILIES[model_type] = family
    return family


def family_for(model_type: str) -> ArchitectureFamily:
    """The family that handles ``model_type``, or a :class:`ModelError` listing the supported ones."""
    if model_type not in _FAMILIES and model_type in BUILTIN:
        module, name = BUILTIN[model_type]
        _FAMILIES[model_type] = getattr(importlib.import_module(module), name)()
    try:
        return _FAMILIES[model_type]
    except KeyError:
        supported = sorted({*BUILTIN, *_FAMILIES})
        raise ModelError(f"model_type {model_type!r} is not supported; supported: {supported}") from None


def family_for_checkpoint(model_dir: str | Path) -> ArchitectureFamily:
    """Read ``config.json`` of a local checkpoint and return its family."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        raise ModelError(
            f"{model_dir}: not a model directory here (it has no config.json). edge-vl loads checkpoints "
            "from local directories only, never from a hub; give the directory of a saved Hugging Face "
            "checkpoint, or a model shipped with edge-vl: edge-vl-mini"
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8"))["model_type"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{config}: cannot read 'model_type' ({e})") from e
    return family_for(model_type)
