"""Declarative shapes of untrusted JSON documents, checked with the key path named.

A shape is a function `(value, at) -> value` that returns the value (numbers
written as "inf"/"nan" strings turned back into floats where allowed) or
raises `ShapeError` naming the key path `at`, e.g. `records[3].stages.onnx`.
`conform(where, value, shape)` turns that into the tools' one-line InputError.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common.errors import InputError

Shape = Callable[[Any, str], Any]
NONFINITE_TEXT = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}  # as reports write them
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ShapeError(Exception):
    """A value that does not have its shape; `at` is the key path."""

    def __init__(self, at: str, problem: str):
        self.at, self.problem = at, problem
        super().__init__(f"{at or 'top level'}: {problem}")


def conform(where: str | Path, value: Any, shape: Shape) -> Any:
    """`shape(value)`, or InputError(where, '<key path>: <problem>')."""
    try:
        return shape(value, "")
    except ShapeError as exc:
        raise InputError(where, str(exc)) from None


def key_path(at: str, key: str | int) -> str:
    """`at` extended by a key or index; odd keys quoted so the path stays one line."""
    if isinstance(key, int):
        return f"{at}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{at}.{key}" if at else key
    return f"{at}[{json.dumps(key)}]"


def describe(value: Any, limit: int = 40) -> str:
    """A short one-line picture of a value for messages."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}
    text = repr(value)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{kinds.get(type(value), type(value).__name__)} {text}" \
        if not isinstance(value, dict | list) else kinds[type(value)]


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(minimum: int | None = None, maximum: int | None = None,
            multiple_of: int | None = None) -> Shape:
    def check(value: Any, at: str) -> int:
        if not _is_integer(value):
            raise ShapeError(at, f"must be an integer, not {describe(value)}")
        if minimum is not None and value < minimum:
            raise ShapeError(at, f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise ShapeError(at, f"must be at most {maximum}, not {value}")
        if multiple_of is not None and value % multiple_of:
            raise ShapeError(at, f"must be a multiple of {multiple_of}, not {value}")
        return value

    check.accepts = lambda v: _is_integer(v) and (minimum is None or v >= minimum) and \
        (maximum is None or v <= maximum) and (multiple_of is None or not v % multiple_of)
    return check


def number(minimum: float | None = None, maximum: float | None = None,
           nonfinite: bool = False) -> Shape:
    """A JSON number; with `nonfinite`, also inf/nan (and the strings reports write for them)."""

    def check(value: Any, at: str) -> float | int:
        if nonfinite and isinstance(value, str) and value in NONFINITE_TEXT:
            value = NONFINITE_TEXT[value]
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ShapeError(at, f"must be a number, not {describe(value)}")
        if not nonfinite and not math.isfinite(value):
            raise ShapeError(at, f"must be a finite number, not {value}")
        if minimum is not None and not value >= minimum:
            raise ShapeError(at, f"must be at least {minimum}, not {value}")
        if maximum is not None and not value <= maximum:
            raise ShapeError(at, f"must be at most {maximum}, not {value}")
        return value

    return check


def string(choices: Iterable[str] | None = None, nonempty: bool = False) -> Shape:
    allowed = tuple(choices) if choices is not None else None

    def check(value: Any, at: str) -> str:
        if not isinstance(value, str):
            raise ShapeError(at, f"must be a string, not {describe(value)}")
        if allowed is not None and value not in allowed:
            raise ShapeError(at, f"must be one of {', '.join(allowed)}; not {describe(value)}")
        if nonempty and not value:
            raise ShapeError(at, "must not be empty")
        return value

    check.accepts = lambda v: isinstance(v, str) and (allowed is None or v in allowed) and \
        (not nonempty or bool(v))
    return check


def boolean() -> Shape:
    def check(value: Any, at: str) -> bool:
        if not isinstance(value, bool):
            raise ShapeError(at, f"must be true or false, not {describe(value)}")
        return value

    return check


def anything() -> Shape:
    return lambda value, at: value


def nullable(shape: Shape) -> Shape:
    return lambda value, at: None if value is None else shape(value, at)


def list_of(item: Shape, min_items: int = 0, max_items: int | None = None) -> Shape:
    def check(value: Any, at: str) -> list:
        if not isinstance(value, list):
            raise ShapeError(at, f"must be a list, not {describe(value)}")
        if len(value) < min_items:
            raise ShapeError(at, f"must have at least {min_items} items, not {len(value)}")
        if max_items is not None and len(value) > max_items:
            raise ShapeError(at, f"must have at most {max_items} items, not {len(value)}")
        accepts = getattr(item, "accepts", None)
        if accepts is not None and all(accepts(v) for v in value):
            return value  # fast path for long lists of plain values (histograms)
        return [item(v, key_path(at, i)) for i, v in enumerate(value)]

    return check


def tuple_of(*items: Shape) -> Shape:
    """A list of exactly these items, e.g. a detection row or a width and height."""

    def check(value: Any, at: str) -> list:
        if not isinstance(value, list):
            raise ShapeError(at, f"must be a list, not {describe(value)}")
        if len(value) != len(items):
            raise ShapeError(at, f"must have {len(items)} items, not {len(value)}")
        return [item(v, key_path(at, i)) for i, (item, v) in enumerate(zip(items, value))]

    return check


def mapping(values: Shape) -> Shape:
    """An object with any keys, each value of one shape."""

    def check(value: Any, at: str) -> dict:
        if not isinstance(value, dict):
            raise ShapeError(at, f"must be an object, not {describe(value)}")
        return {k: values(v, key_path(at, k)) for k, v in value.items()}

    return check


def obj(required: dict[str, Shape], optional: dict[str, Shape] | None = None) -> Shape:
    """An object with these keys (others are kept as they are)."""
    optional = optional or {}

    def check(value: Any, at: str) -> dict:
        if not isinstance(value, dict):
            raise ShapeError(at, f"must be an object, not {describe(value)}")
        for key in required:
            if key not in value:
                raise ShapeError(key_path(at, key), "missing")
        result = dict(value)
        for key, shape in (*required.items(), *optional.items()):
            if key in value:
                result[key] = shape(value[key], key_path(at, key))
        return result

    return check


def refine(shape: Shape, rule: Callable[[Any, str], None]) -> Shape:
    """`shape`, then `rule(value, at)`, which raises ShapeError for what types cannot say."""

    def check(value: Any, at: str) -> Any:
        value = shape(value, at)
        rule(value, at)
        return value

    return check


def keyed(key: str, present: Shape, absent: Shape) -> Shape:
    """`present` for objects holding `key`, else `absent` (e.g. an error record or figures)."""
    return lambda value, at: (present if isinstance(value, dict) and key in value
                              else absent)(value, at)
