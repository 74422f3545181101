"""Typed documents (dataclasses) to JSON data and back, and their JSON Schema.

One codec for every report type: `decode(cls, data)` checks untrusted JSON data
against the type hints of `cls` and names the key path of the first problem
(ShapeError); `encode(value)` writes plain JSON data (inf/nan as strings, the
fields of each object in declaration order, absent optional fields left out);
`json_schema(cls)` describes the same shapes.

Vocabulary: bool, int, float, str, `Figure` (a float that may be inf/nan,
written as a string), `Count` (int >= 0), Literal, `X | None`, list, dict with
str keys, fixed tuples, `Any` (any JSON value), dataclasses, and unions of
dataclasses (the first whose required keys are all present). A field with
`metadata=ABSENT` may be missing from the object (None in Python). A type with a
`from_json(value, at)` class method decodes itself; a dataclass's
`check_shape(at)`, if it has one, runs after its fields are decoded.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from typing import Annotated, Any, Literal, TypeVar, Union

from parity.json_shape import ShapeError, describe, key_path

T = TypeVar("T")
OMIT = "omit when None"
ABSENT = {OMIT: True}  # field metadata: the key may be missing (None in Python)


class _FigureTag:
    """float | 'inf' | '-inf' | 'nan' in JSON."""


class _CountTag:
    """int >= 0."""


Figure = Annotated[float, _FigureTag]
Count = Annotated[int, _CountTag]
NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan, "Infinity": math.inf,
             "-Infinity": -math.inf, "NaN": math.nan}


class WholeProblem(ShapeError):
    """A problem whose message already names its key path."""

    def __str__(self) -> str:
        return self.problem


@cache
def _hints(cls: type) -> dict[str, Any]:
    # each class's annotations are read in its own module (a subclass may live elsewhere)
    return typing.get_type_hints(cls, include_extras=True)


def _fields(cls: type) -> list[tuple[str, Any, bool]]:
    """(name, type, may be absent) of a dataclass, in declaration order."""
    hints = _hints(cls)
    return [(f.name, hints[f.name], bool(f.metadata.get(OMIT))) for f in dataclasses.fields(cls)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, at: str, nonfinite: bool) -> float:
    if nonfinite and isinstance(value, str) and value in NONFINITE:
        return NONFINITE[value]
    if _is_int(value) or isinstance(value, float):
        if not nonfinite and not math.isfinite(value):
            raise ShapeError(at, f"must be a finite number, not {value}")
        return value
    raise ShapeError(at, f"must be a number, not {describe(value)}")


def _variants(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(hint)
    return ()


def decode(hint: Any, value: Any, at: str = "") -> Any:
    """`value` (JSON data) as `hint` describes it, or ShapeError naming the key path."""
    if hint is Any:
        return value
    if typing.get_origin(hint) is Annotated:
        base, *tags = typing.get_args(hint)
        if _FigureTag in tags:
            return _number(value, at, nonfinite=True)
        if _CountTag in tags:
            value = _decode_plain(int, value, at)
            if value < 0:
                raise ShapeError(at, f"must be at least 0, not {value}")
            return value
        return decode(base, value, at)
    variants = _variants(hint)
    if variants:
        return _decode_union(variants, value, at)
    if hasattr(hint, "from_json"):  # a type that checks itself
        return hint.from_json(value, at)
    if dataclasses.is_dataclass(hint):
        return _decode_object(hint, value, at)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise ShapeError(at, f"must be one of {', '.join(map(str, args))}; not "
                             f"{describe(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ShapeError(at, f"must be a list, not {describe(value)}")
        return [decode(args[0], item, key_path(at, i)) for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list):
            raise ShapeError(at, f"must be a list, not {describe(value)}")
        if len(value) != len(args):
            raise ShapeError(at, f"must have {len(args)} items, not {len(value)}")
        return tuple(decode(a, item, key_path(at, i)) for i, (a, item) in
                     enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ShapeError(at, f"must be an object, not {describe(value)}")
        return {k: decode(args[1], v, key_path(at, k)) for k, v in value.items()}
    return _decode_plain(hint, value, at)


def _decode_plain(hint: Any, value: Any, at: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ShapeError(at, f"must be true or false, not {describe(value)}")
        return value
    if hint is int:
        if not _is_int(value):
            raise ShapeError(at, f"must be an integer, not {describe(value)}")
        return value
    if hint is float:
        return _number(value, at, nonfinite=False)
    if hint is str:
        if not isinstance(value, str):
            raise ShapeError(at, f"must be a string, not {describe(value)}")
        return value
    raise TypeError(f"no codec for {hint!r}")


def _decode_union(variants: tuple[Any, ...], value: Any, at: str) -> Any:
    if value is None and type(None) in variants:
        return None
    kinds = [v for v in variants if v is not type(None)]
    if len(kinds) == 1:
        return decode(kinds[0], value, at)
    if all(dataclasses.is_dataclass(k) for k in kinds) and isinstance(value, dict):
        for kind in kinds:
            required = [name for name, _, omit in _fields(kind) if not omit]
            if all(name in value for name in required):
                return decode(kind, value, at)
        return decode(kinds[-1], value, at)  # its first missing key is the message
    for kind in kinds:  # scalar unions (a check's value: a figure or a text)
        try:
            return decode(kind, value, at)
        except ShapeError:
            continue
    raise ShapeError(at, f"{describe(value)} is none of the allowed kinds")


def _decode_object(cls: type[T], value: Any, at: str) -> T:
    if not isinstance(value, dict):
        raise ShapeError(at, f"must be an object, not {describe(value)}")
    fields = _fields(cls)
    known = {name for name, _, _ in fields}
    unknown = next((key for key in value if key not in known), None)
    if unknown is not None:
        raise ShapeError(key_path(at, unknown), "unknown key")
    given = {}
    for name, hint, omit in fields:
        if name not in value:
            if omit:
                continue
            raise ShapeError(key_path(at, name), "missing")
        given[name] = decode(hint, value[name], key_path(at, name))
    instance = cls(**given)
    check_shape = getattr(instance, "check_shape", None)
    if check_shape is not None:
        check_shape(at)
    return instance


def encode(value: Any) -> Any:
    """Plain JSON data: dataclasses as objects (absent fields left out), inf/nan as strings,
    tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {}
        for name, _, omit in _fields(type(value)):
            item = getattr(value, name)
            if item is None and omit:
                continue
            data[name] = encode(item)
        return data
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return encode(value.item())
    return value


def json_schema(cls: type, title: str, schema_id: str) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of `cls`, each dataclass once under $defs."""
    definitions: dict[str, Any] = {}
    root = _schema(cls, definitions)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id,
            "title": title, **root, "$defs": dict(sorted(definitions.items()))}


def _schema(hint: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    if hint is Any:
        return {}
    if typing.get_origin(hint) is Annotated:
        base, *tags = typing.get_args(hint)
        if _FigureTag in tags:
            return {"anyOf": [{"type": "number"}, {"enum": ["inf", "-inf", "nan"]}]}
        if _CountTag in tags:
            return {"type": "integer", "minimum": 0}
        return _schema(base, definitions)
    variants = _variants(hint)
    if variants:
        return {"anyOf": [_schema(v, definitions) for v in variants]}
    if hint is type(None):
        return {"type": "null"}
    if dataclasses.is_dataclass(hint):
        return _object_schema(hint, definitions)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": _schema(args[0], definitions)}
    if origin is tuple:
        return {"type": "array", "prefixItems": [_schema(a, definitions) for a in args],
                "items": False, "minItems": len(args)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(args[1], definitions)}
    return {bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"},
            str: {"type": "string"}}[hint]


def _object_schema(cls: type, definitions: dict[str, Any]) -> dict[str, Any]:
    name = cls.__name__
    if name not in definitions:
        definitions[name] = {}  # placeholder: recursion and repeats refer to it
        fields = _fields(cls)
        body: dict[str, Any] = {"type": "object"}
        if cls.__doc__:
            body["description"] = " ".join(cls.__doc__.split())
        body["properties"] = {field: _schema(hint, definitions) for field, hint, _ in fields}
        body["required"] = [field for field, _, omit in fields if not omit]
        body["additionalProperties"] = False
        definitions[name] = body
    return {"$ref": f"#/$defs/{name}"}
