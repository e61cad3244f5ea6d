"""Registry of converters, keyed by architecture family name, and exports for timing."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_vl.errors import ExportError

if TYPE_CHECKING:
    from converters.base import Converter

_CONVERTERS: dict[str, Converter] = {}


def register_converter(converter: Converter) -> Converter:
    if converter.family_name in _CONVERTERS:
        raise ValueError(f"a converter for {converter.family_name!r} is already registered")
    _CONVERTERS[converter.family_name] = converter
    return converter


def converter_for(family_name: str) -> Converter:
    """The converter of a family, or an :class:`ExportError` naming the ones that exist."""
    from converters import clip, meter, vilt  # noqa: F401  (importing a converter module registers it)

    try:
        return _CONVERTERS[family_name]
    except KeyError:
        raise ExportError(
            f"no converter for family {family_name!r}; available: {sorted(_CONVERTERS)}"
        ) from None


@contextlib.contextmanager
def temporary_export(family, model, inputs, sample, skipped: Sequence[int]) -> Iterator[Path]:
    """Export ``model`` with the arms ``skipped`` to a temporary directory and yield the IR path
    (parity-checked like any export); the model's own skip set is restored afterwards. For timing
    variants of a model (full vs retained) without writing them anywhere."""
    before = family.skipped(model)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            family.set_skipped(model, skipped)
            yield converter_for(family.name).export(family, model, inputs, sample, Path(tmp)).xml
    finally:
        family.set_skipped(model, before)
