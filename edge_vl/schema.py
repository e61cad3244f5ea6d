"""Typed reading of JSON documents into frozen dataclasses, with errors that name the field.

A schema is a set of dataclasses whose field annotations use ``str``, ``int``, ``float``,
``bool``, ``Any``, ``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, ``T | None`` and other
schema dataclasses. :func:`parse` checks every value against its annotation (``bool`` is not an
``int``; an ``int`` is accepted as a ``float``), fills defaults, rejects unknown keys only where a
class asks for it, and runs ``__post_init__`` checks; any failure raises :class:`SchemaError`
with the dotted path of the field (``model.inputs[0].shape``). :func:`to_json` is the inverse.

Imports no torch: the device reads bundle manifests with it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SchemaError(ValueError):
    """A value does not match its schema; ``field`` is the dotted path of the offending value."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field or 'document'}: {message}")
        self.field = field
        self.reason = message


def parse(cls: type[T], data: Any, where: str = "") -> T:
    """``data`` (parsed JSON) as an instance of the dataclass ``cls``; raises :class:`SchemaError`."""
    return _value(cls, data, where)


def to_json(obj: Any) -> Any:
    """A schema dataclass (or a structure of them) as plain JSON values; ``None`` fields are left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_json(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def check(condition: bool, message: str) -> None:
    """For ``__post_init__`` checks: raise a ``ValueError`` that :func:`parse` turns into a
    :class:`SchemaError` naming the object's path."""
    if not condition:
        raise ValueError(message)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "an object"
    return str(tp)


def _value(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _value(options[0], value, where)
        for option in options:  # the first that fits
            try:
                return _value(option, value, where)
            except SchemaError:
                continue
        raise SchemaError(where, f"expected one of {', '.join(_type_name(o) for o in options)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _object(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SchemaError(where, f"expected a list, got {_json_type(value)}")
        item = args[0] if args else Any
        items = [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(where, f"expected an object, got {_json_type(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: _value(item, v, _join(where, k)) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(where, f"expected true or false, got {_json_type(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(where, f"expected an integer, got {_json_type(value)}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise SchemaError(where, f"expected a finite number, got {_json_type(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(where, f"expected a string, got {_json_type(value)}")
        return value
    raise TypeError(f"schema type {tp!r} at {where} is not supported")  # a bug in the schema itself


def _object(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(where, f"expected an object, got {_json_type(value)}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = _value(hints[f.name], value[f.name], _join(where, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(_join(where, f.name), "missing")
    if getattr(cls, "closed", False):  # a class that must not carry keys it does not know
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SchemaError(where, f"unknown key(s) {unknown}")
    try:
        return cls(**kwargs)
    except SchemaError as e:  # a nested check already named its field
        raise SchemaError(_join(where, e.field), e.reason) from None
    except (ValueError, TypeError) as e:
        raise SchemaError(where, str(e)) from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return (
            f"the number {value!r}"
            if isinstance(value, int) or math.isfinite(value)
            else "a non-finite number"
        )
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
