"""Registry of converters, keyed by architecture family name."""

from __future__ import annotations

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
    from converters import meter, vilt  # noqa: F401  (importing a converter module registers it)

    try:
        return _CONVERTERS[family_name]
    except KeyError:
        raise ExportError(
            f"no converter for family {family_name!r}; available: {sorted(_CONVERTERS)}"
        ) from None
