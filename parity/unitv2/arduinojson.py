"""ArduinoJson 6.17 as the UnitV2 firmware links it: memory pool, float format, serialiser.

One pool model serves both documents the firmware builds: the JSON line it prints
(``detection_line``) and the model.json it parses (``model_json``).

``include/ArduinoJson`` (6.17.2), not embedded mode (Linux):

* ``Configuration.hpp``: double floats, long long ints, 32-bit slot offsets, string
  deduplication on (``ARDUINOJSON_ENABLE_STRING_DEDUPLICATION 1``).
* ``Variant/VariantSlot.hpp`` + ``Variant/VariantContent.hpp``: a slot is 8 (content) + 1
  (flags) + 4 (next) + 4 (key pointer) bytes, 24 with armhf padding. Every object member and
  every array element takes one slot.
* ``Memory/MemoryPool.hpp``: strings are copied (``strlen + 1`` bytes) unless an equal one
  is already in the pool (``saveString`` / ``saveStringFromFreeZone`` call ``findString``).
  Keys given as literals are not copied; keys read by ``deserializeJson`` are. The parser
  writes a string into the free zone before looking for a duplicate, so even a duplicate
  needs ``strlen + 1`` free bytes at that moment. An allocation that does not fit fails.
* ``Json/JsonSerializer.hpp``, ``Json/TextFormatter.hpp``, ``Json/EscapeSequence.hpp``,
  ``Numbers/FloatParts.hpp``, ``Numbers/FloatTraits.hpp``: compact output in insertion
  order; floats printed with up to 9 decimals (round half up, trailing zeros removed,
  exponent outside [1e-5, 1e7)); strings escape ``" \\ \\b \\f \\n \\r \\t`` only.
"""

from __future__ import annotations

import math
import struct
from typing import Any

SLOT_BYTES = 24
"""One ArduinoJson 6.17 ``VariantSlot`` on the armhf firmware (see the module docstring)."""


class MemoryPool:
    """ArduinoJson's ``MemoryPool`` accounting: fixed-size slots, deduplicated string copies.

    ``capacity=None`` never refuses: ``peak`` then tells how many bytes a document needs.
    """

    def __init__(self, capacity: int | None, slot_bytes: int = SLOT_BYTES) -> None:
        self.capacity = capacity
        self.slot_bytes = slot_bytes
        self.used = 0
        self.peak = 0
        self.strings: set[bytes] = set()

    def _room(self, size: int) -> bool:
        self.peak = max(self.peak, self.used + size)
        return self.capacity is None or self.used + size <= self.capacity

    def slot(self) -> bool:
        """A member or element slot; False when the pool is full."""
        if not self._room(self.slot_bytes):
            return False
        self.used += self.slot_bytes
        return True

    def copy_string(self, raw: bytes) -> bool:
        """``saveString``: a copied string value, or the equal one already in the pool."""
        if raw in self.strings:
            return True
        return self._store(raw)

    def parse_string(self, raw: bytes) -> bool:
        """A string ``deserializeJson`` reads: first written to the free zone, then deduplicated."""
        if not self._room(len(raw) + 1):
            return False
        return raw in self.strings or self._store(raw)

    def _store(self, raw: bytes) -> bool:
        if not self._room(len(raw) + 1):
            return False
        self.used += len(raw) + 1
        self.strings.add(raw)
        return True


def parse_usage(doc: Any, pool: MemoryPool | None = None) -> int:
    """Bytes ``deserializeJson`` needs in the pool for ``doc`` (the root is not in the pool)."""
    pool = pool or MemoryPool(None)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                pool.parse_string(key.encode())
                pool.slot()
                walk(item)
        elif isinstance(value, list):
            for item in value:
                pool.slot()
                walk(item)
        elif isinstance(value, str):
            pool.parse_string(value.encode())

    walk(doc)
    return pool.peak


def _forge(hex_words: str) -> tuple[float, ...]:
    return tuple(struct.unpack(">d", bytes.fromhex(h))[0] for h in hex_words.split())


# ArduinoJson FloatTraits<double>: 10^(2^i), 10^-(2^i), 10^-(2^i - 1) for i = 0..8, from bits.
_POS_POW10 = _forge(
    "4024000000000000 4059000000000000 40C3880000000000 4197D78400000000 4341C37937E08000 "
    "4693B8B5B5056E17 4D384F03E93FF9F5 5A827748F9301D32 75154FDD7F73BF3C"
)
_NEG_POW10 = _forge(
    "3FB999999999999A 3F847AE147AE147B 3F1A36E2EB1C432D 3E45798EE2308C3A 3C9CD2B297D889BC "
    "3949F623D5A8A733 32A50FFD44F4A73D 255BBA08CF8C979D 0AC8062864AC6F43"
)
_NEG_POW10_PLUS_ONE = _forge(
    "3FF0000000000000 3FB999999999999A 3F50624DD2F1A9FC 3E7AD7F29ABCAF48 3CD203AF9EE75616 "
    "398039D665896880 32DA53FC9631D10D 2591544581B7DEC2 0AFE07B27DD78B14"
)


def format_float(value: float) -> str:
    """ArduinoJson 6.17 ``TextFormatter::writeFloat`` for a double (``FloatParts``)."""
    v = float(value)
    if not math.isfinite(v):
        return "null"
    sign = ""
    if v < 0.0:
        sign, v = "-", -v
    exponent, index, bit = 0, 8, 256
    if v >= 1e7:
        while index >= 0:
            if v >= _POS_POW10[index]:
                v *= _NEG_POW10[index]
                exponent += bit
            bit >>= 1
            index -= 1
    if 0 < v <= 1e-5:
        while index >= 0:
            if v < _NEG_POW10_PLUS_ONE[index]:
                v *= _POS_POW10[index]
                exponent -= bit
            bit >>= 1
            index -= 1
    integral = int(v)
    max_decimal, places = 1_000_000_000, 9
    tmp = integral
    while tmp >= 10:
        max_decimal //= 10
        places -= 1
        tmp //= 10
    remainder = (v - float(integral)) * float(max_decimal)
    decimal = int(remainder)
    remainder = remainder - float(decimal)
    decimal += int(remainder * 2)
    if decimal >= max_decimal:
        decimal = 0
        integral += 1
        if exponent and integral >= 10:
            exponent += 1
            integral = 1
    while decimal % 10 == 0 and places > 0:
        decimal //= 10
        places -= 1
    text = sign + str(integral)
    if places:
        text += "." + str(decimal).rjust(places, "0")
    if exponent < 0:
        text += "e-" + str(-exponent)
    elif exponent > 0:
        text += "e" + str(exponent)
    return text


_ESCAPES = {
    ord('"'): b'\\"',
    ord("\\"): b"\\\\",
    8: b"\\b",
    12: b"\\f",
    10: b"\\n",
    13: b"\\r",
    9: b"\\t",
}


def _json_string(raw: bytes) -> bytes:
    return b'"' + b"".join(_ESCAPES.get(c, bytes((c,))) for c in raw) + b'"'


class JsonObject(list):
    """A document object: [key, value] pairs in insertion order (values: see ``serialize``)."""


class JsonArray(list):
    """A document array."""


def serialize(value: object) -> bytes:
    """``serializeJson``: None -> null, bytes -> string, float, int, JsonArray, JsonObject."""
    if value is None:
        return b"null"
    if isinstance(value, bytes):
        return _json_string(value)
    if isinstance(value, float):
        return format_float(value).encode()
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, JsonArray):
        return b"[" + b",".join(serialize(v) for v in value) + b"]"
    if isinstance(value, JsonObject):
        return b"{" + b",".join(_json_string(k.encode()) + b":" + serialize(v)
                                for k, v in value) + b"}"
    raise TypeError(type(value))  # pragma: no cover
