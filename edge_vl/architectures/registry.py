"""Registry of architecture families, keyed by HF ``config.model_type``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from edge_vl.errors import ModelError

if TYPE_CHECKING:
    from edge_vl.architectures.base import ArchitectureFamily

_FAMILIES: dict[str, ArchitectureFamily] = {}


def register_family(family: ArchitectureFamily) -> ArchitectureFamily:
    """Make ``family`` available for its ``model_types``; a second registration of a type is an error."""
    for model_type in family.model_types:
        if model_type in _FAMILIES:
            raise ValueError(
                f"model_type {model_type!r} is already registered by {_FAMILIES[model_type].name}"
            )
        _FAMILIES[model_type] = family
    return family


def family_for(model_type: str) -> ArchitectureFamily:
    """The family that handles ``model_type``, or a :class:`ModelError` listing the supported ones."""
    _load_builtin_families()
    try:
        return _FAMILIES[model_type]
    except KeyError:
        raise ModelError(
            f"model_type {model_type!r} is not supported; supported: {sorted(_FAMILIES)}"
        ) from None


def family_for_checkpoint(model_dir: str | Path) -> ArchitectureFamily:
    """Read ``config.json`` of a local checkpoint and return its family."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        raise ModelError(f"{model_dir}: not a model directory (config.json is missing)")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8"))["model_type"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ModelError(f"{config}: cannot read 'model_type' ({e})") from e
    return family_for(model_type)


def registered_families() -> dict[str, ArchitectureFamily]:
    _load_builtin_families()
    return dict(_FAMILIES)


def _load_builtin_families() -> None:
    # importing a family module registers it (one line at the bottom of each module)
    from edge_vl.architectures import clip, meter, vilt  # noqa: F401
