"""Config values of the CNN backbones: checks beyond `heads.schema` (to move there in time)
and how a width multiplier is named."""

from __future__ import annotations

import math
from typing import Any

from heads.schema import Check, ConfigProblem, expected
from heads.untrusted import shown

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
