"""Detections -> the JSON line the UnitV2 prints, as its ArduinoJson 6.17.2 builds it.

Source: m5stack UnitV2Framework ``main/object_recognition.cpp`` ``draw_objects``: nothing
is sent for 0 objects (``RD_clear`` only); otherwise a ``DynamicJsonDocument(1024 * 16)``
gets ``num`` = object count, then per object ``obj[i]`` keys prob (float), x, y, w, h
(``(int)`` casts: truncation) and type (``config_class_names.at(label)``).
``src/framework.cpp``: ``sendPIPEJsonDoc`` adds ``running`` = the function name and
serialises with ``serializeJson``; ``sendPIPE`` appends ``"\\r\\n"`` (``json_line`` returns
the line without it).

The keys are literals (not copied); class names and the running name are copied strings.
An allocation that does not fit silently fails (``Collection/CollectionImpl.hpp``,
``Variant/VariantData.hpp``): the member is not added, an element that got a slot but no
member prints as ``{}``, a string that does not fit prints as ``null``. So past roughly
97 objects the tail of ``obj`` and then ``running`` disappear. The limit is pool memory,
not text length: 97 objects serialise to only about 5 KB. Pool model: ``arduinojson``.
"""

from __future__ import annotations

import numpy as np

from parity.unitv2.arduinojson import JsonArray, JsonObject, MemoryPool, serialize
from parity.unitv2.decode import FirmwareObject

_F32 = np.float32


def _member(obj: JsonObject, key: str, pool: MemoryPool) -> list | None:
    for pair in obj:
        if pair[0] == key:
            return pair
    if not pool.slot():
        return None
    pair = [key, None]
    obj.append(pair)
    return pair


def _set(pair: list, value: object, pool: MemoryPool) -> None:
    if isinstance(value, bytes):
        pair[1] = value if pool.copy_string(value) else None
    else:
        pair[1] = value


def _encoded_names(objects: list[FirmwareObject], class_names: list[str]) -> list[bytes]:
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
    return names


def _add_object(root: JsonObject, i: int, fields: tuple, pool: MemoryPool) -> None:
    for key, value in fields:  # doc["obj"][i][key] = value
        obj_pair = _member(root, "obj", pool)
        if obj_pair is None:
            continue
        if obj_pair[1] is None:
            obj_pair[1] = JsonArray()
        arr = obj_pair[1]
        got = i < len(arr)
        for _ in range(i + 1 - len(arr)):
            got = pool.slot()
            if got:
                arr.append(None)
        if not got:
            continue
        if arr[i] is None:
            arr[i] = JsonObject()
        pair = _member(arr[i], key, pool)
        if pair is not None:
            _set(pair, value, pool)


def json_line(objects: list[FirmwareObject], class_names: list[str], *, pool_bytes: int,
              running_name: str) -> str | None:
    """The line ``draw_objects`` + ``sendPIPEJsonDoc`` emit, without ``\\r\\n``; None if empty.

    Built as ArduinoJson would fill its ``pool_bytes`` pool on the armhf device: members that
    do not fit are left out, so a long list ends with a partial or empty object and may lose
    ``running`` (or print it as null).
    """
    if not objects:
        return None
    names = _encoded_names(objects, class_names)
    pool = MemoryPool(pool_bytes)
    root = JsonObject()
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
        _add_object(root, i, fields, pool)
    pair = _member(root, "running", pool)
    if pair is not None:
        _set(pair, running_name.encode(), pool)
    return serialize(root).decode("utf-8")
