"""Detections -> the JSON line the UnitV2 prints, as ArduinoJson 6.17.2 builds it.

Source: m5stack UnitV2Framework ``main/object_recognition.cpp`` ``draw_objects``: nothing
is sent for 0 objects (``RD_clear`` only); otherwise a ``DynamicJsonDocument(1024 * 16)``
gets ``num`` = object count, then per object ``obj[i]`` keys prob (float), x, y, w, h
(``(int)`` casts: truncation) and type (``config_class_names.at(label)``).
``src/framework.cpp``: ``sendPIPEJsonDoc`` adds ``running`` = the function name and
serialises with ``serializeJson``; ``sendPIPE`` appends ``"\\r\\n"`` (``json_line`` returns
the line without it).

``include/ArduinoJson`` (6.17.2):

* ``Configuration.hpp``: not embedded mode on Linux -> double floats, long long ints,
  32-bit slot offsets; ``Variant/VariantSlot.hpp`` + ``Variant/VariantContent.hpp``: a slot
  is 8 (content) + 1 (flags) + 4 (next) + 4 (key pointer) bytes, 24 with armhf padding.
* ``Memory/MemoryPool.hpp``: 16384-byte pool; every member/element takes one slot; string
  values are copied (``strlen + 1`` bytes, deduplicated by exact match); literal keys are
  not copied. An allocation that does not fit silently fails
  (``Collection/CollectionImpl.hpp``, ``Variant/VariantData.hpp``): the member is not
  added, an element that got a slot but no member prints as ``{}``, a string that does
  not fit prints as ``null``. So past roughly 97 objects the tail of ``obj`` and then
  ``running`` disappear. The limit is pool memory, not text length: 97 objects serialise
  to only about 5 KB.
* ``Json/JsonSerializer.hpp``, ``Json/TextFormatter.hpp``, ``Json/EscapeSequence.hpp``,
  ``Numbers/FloatParts.hpp``, ``Numbers/FloatTraits.hpp``: compact output in insertion
  order; floats printed with up to 9 decimals (round half up, trailing zeros removed,
  exponent outside [1e-5, 1e7)); strings escape ``" \\ \\b \\f \\n \\r \\t`` only.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from parity.unitv2.constants import JSON_POOL_BYTES, JSON_SLOT_BYTES, RUNNING_NAME
from parity.unitv2.decode import FirmwareObject

_F32 = np.float32


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


class _Obj(list):
    """JSON object: list of [key, value] pairs in insertion order."""


class _Arr(list):
    """JSON array."""


class _Pool:
    """ArduinoJson MemoryPool accounting: 24-byte slots, deduplicated copied strings."""

    def __init__(self) -> None:
        self.free = JSON_POOL_BYTES
        self.strings: set[bytes] = set()

    def slot(self) -> bool:
        if self.free < JSON_SLOT_BYTES:
            return False
        self.free -= JSON_SLOT_BYTES
        return True

    def string(self, raw: bytes) -> bool:
        if raw in self.strings:
            return True
        if self.free < len(raw) + 1:
            return False
        self.free -= len(raw) + 1
        self.strings.add(raw)
        return True


def _member(obj: _Obj, key: str, pool: _Pool) -> list | None:
    for pair in obj:
        if pair[0] == key:
            return pair
    if not pool.slot():
        return None
    pair = [key, None]
    obj.append(pair)
    return pair


def _set(pair: list, value: object, pool: _Pool) -> None:
    if isinstance(value, bytes):
        pair[1] = value if pool.string(value) else None
    else:
        pair[1] = value


def _dump(value: object) -> bytes:
    if value is None:
        return b"null"
    if isinstance(value, bytes):
        return _json_string(value)
    if isinstance(value, float):
        return format_float(value).encode()
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, _Arr):
        return b"[" + b",".join(_dump(v) for v in value) + b"]"
    if isinstance(value, _Obj):
        return b"{" + b",".join(_json_string(k.encode()) + b":" + _dump(v) for k, v in value) + b"}"
    raise TypeError(type(value))  # pragma: no cover


def json_line(objects: list[FirmwareObject], class_names: list[str]) -> str | None:
    """The line ``draw_objects`` + ``sendPIPEJsonDoc`` emit, without ``\\r\\n``; None if empty.

    Built as ArduinoJson would fill its 16 KiB pool on the armhf device: members that do not
    fit are left out, so a long list ends with a partial or empty object and may lose
    ``running`` (or print it as null).
    """
    if not objects:
        return None
    names: list[bytes] = []
    for name in class_names:
        if "\x00" in name:
            raise ValueError(f"class name {name!r} contains a NUL byte")
        names.append(name.encode("utf-8"))
    for o in objects:
        if not 0 <= o.label < len(names):
            raise ValueError(
                f"label {o.label} has no class name ({len(names)} names); the firmware's "
                "config_class_names.at() would abort"
            )
    pool = _Pool()
    root = _Obj()
    pair = _member(root, "num", pool)
    if pair is not None:
        _set(pair, len(objects), pool)
    for i, o in enumerate(objects):
        fields = (
            ("prob", float(_F32(o.prob))),
            ("x", int(o.x)),
            ("y", int(o.y)),
            ("w", int(o.w)),
            ("h", int(o.h)),
            ("type", names[o.label]),
        )
        for key, value in fields:  # doc["obj"][i][key] = value
            obj_pair = _member(root, "obj", pool)
            if obj_pair is None:
                continue
            if obj_pair[1] is None:
                obj_pair[1] = _Arr()
            arr = obj_pair[1]
            got = i < len(arr)
            for _ in range(i + 1 - len(arr)):
                got = pool.slot()
                if got:
                    arr.append(None)
            if not got:
                continue
            if arr[i] is None:
                arr[i] = _Obj()
            pair = _member(arr[i], key, pool)
            if pair is not None:
                _set(pair, value, pool)
    pair = _member(root, "running", pool)
    if pair is not None:
        _set(pair, RUNNING_NAME.encode(), pool)
    return _dump(root).decode("utf-8")
