"""Checks for untrusted config values: each takes (value, key path) and returns the value to use.

A failed check raises `ConfigProblem` naming the key path and what was expected;
`heads.config` turns it into an input error naming the file. Components declare
the config keys they read with these checks (`CONFIG_KEYS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from heads.activations import ACTIVATION_NAMES
from heads.untrusted import has_control_character, shown


class ConfigProblem(Exception):
    """A config value (or the document) is unusable; the message names the key path."""


Check = Callable[[Any, str], Any]
Schema = Mapping[str, Check]


def _describe(value: Any) -> str:
    kinds = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    kind = kinds.get(type(value), f"a {type(value).__name__}")
    return kind if value is None else f"{shown(value)} ({kind})"


def expected(key: str, what: str, value: Any) -> ConfigProblem:
    return ConfigProblem(f"{key}: expected {what}, got {_describe(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int, high: int, odd: bool = False) -> Check:
    def check(value: Any, key: str) -> int:
        if not _is_int(value) or not low <= value <= high or (odd and value % 2 == 0):
            raise expected(key, f"{'an odd' if odd else 'an'} integer from {low} to {high}",
                           value)
        return value
    return check


def integers(low: int, high: int, min_len: int = 1, max_len: int = 8) -> Check:
    def check(value: Any, key: str) -> tuple[int, ...]:
        if not (isinstance(value, list) and min_len <= len(value) <= max_len
                and all(_is_int(v) and low <= v <= high for v in value)):
            count = str(min_len) if min_len == max_len else f"{min_len} to {max_len}"
            raise expected(key, f"a list of {count} integers from {low} to {high}", value)
        return tuple(value)
    return check


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise expected(key, "true or false", value)
    return value


def choice(names: Any, what: str) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in names:
            raise ConfigProblem(f"{key} {shown(value)} is not {what} "
                                f"(known: {', '.join(names)})")
        return value
    return check


def mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise expected(key, "a mapping of keys to values", value)
    return value


def normalize(value: Any, key: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """[[mean B, G, R], [std B, G, R]]: finite numbers, positive stds."""
    def finite(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    rows_ok = (isinstance(value, list) and len(value) == 2
               and all(isinstance(row, list) and len(row) == 3 and all(map(finite, row))
                       for row in value))
    if not rows_ok or min(value[1]) <= 0:
        raise expected(key, "[[3 mean values], [3 positive std values]]", value)
    return tuple(map(float, value[0])), tuple(map(float, value[1]))


def class_names(value: Any, key: str) -> tuple[str, ...]:
    """A list of names; numbers are taken as written, other kinds (true, null, lists) refused."""
    if not isinstance(value, list):
        raise expected(key, "a list of class names", value)
    for index, name in enumerate(value):
        if not isinstance(name, (str, int, float)) or isinstance(name, bool):
            raise expected(f"{key}[{index}]", "a class name (quote names like yes, no, null)",
                           name)
        if has_control_character(str(name)):
            raise ConfigProblem(f"{key}[{index}]: class name {shown(name)} holds a control "
                                "character")
    return tuple(str(name) for name in value)


def optional(check: Check) -> Check:
    """`check`, but null means absent."""
    return lambda value, key: None if value is None else check(value, key)


CHANNELS = integer(1, 4096)
ACTIVATION = choice(ACTIVATION_NAMES, "a NanoDet activation")


MAX_WIDTH_MULTIPLIER = 4.0


def width_multiplier(value: Any, key: str) -> float:
    """A channel multiplier: a finite number above 0 and at most MAX_WIDTH_MULTIPLIER."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 < value <= MAX_WIDTH_MULTIPLIER):
        raise expected(key, f"a number above 0 and at most {MAX_WIDTH_MULTIPLIER:g}", value)
    return float(value)


def integer_choice(values: tuple[int, ...], what: str) -> Check:
    """One of `values` (integers)."""
    def check(value: Any, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value not in values:
            raise ConfigProblem(f"{key} {shown(value)} is not {what} "
                                f"(known: {', '.join(map(str, values))})")
        return value
    return check


def multiplier_name(multiplier: float) -> str:
    """'1.0x', '0.5x', '0.75x': at least one decimal, as NanoDet names model sizes."""
    text = f"{multiplier:g}"
    return f"{text}{'' if '.' in text or 'e' in text else '.0'}x"
