"""The M5Stack UnitV2's NanoDet path, re-implemented in numpy: the firmware emulation.

By job: ``geometry`` (``Letterbox``, the firmware's letterbox rule) and ``preprocess``
(bit-exact ncnn resize, pad and normalise); ``decode`` (proposals, sort, NMS,
``decode_levels``); ``arduinojson`` (the library's pool, float format and serialiser),
``detection_line`` (the JSON line the firmware prints) and ``model_json`` (the file it
reads). The device's numbers live in its target, ``parity.targets.unitv2``; these
functions take them as arguments. Source: m5stack UnitV2Framework
``main/object_recognition.cpp`` and the libraries it links (each module names its part).

The UnitV2-bound names below (constants, and functions with the device's numbers filled
in) are kept for callers not yet asking ``parity.targets``; they are resolved on first use.
"""

from __future__ import annotations

from typing import Any

from parity.unitv2.arduinojson import format_float
from parity.unitv2.decode import (
    FirmwareObject,
    Proposals,
    firmware_nms,
    firmware_sort_order,
    generate_proposals,
)
from parity.unitv2.geometry import Letterbox

_DEVICE_NUMBERS = {
    "FRAME_W": lambda d, t: d.frame_size[0],
    "FRAME_H": lambda d, t: d.frame_size[1],
    "TARGET_SIZE": lambda d, t: d.net_long_side,
    "MEAN_BGR": lambda d, t: d.normalisation.mean_bgr,
    "NORM_BGR": lambda d, t: d.normalisation.norm_bgr,
    "STRIDES": lambda d, t: d.strides,
    "PROB_THRESHOLD": lambda d, t: d.score_threshold,
    "NMS_THRESHOLD": lambda d, t: d.nms_iou,
    "INPUT_BLOB": lambda d, t: t.blobs.input,
    "RUNNING_NAME": lambda d, t: d.json_line_format.running_name,
    "LINE_TERMINATOR": lambda d, t: d.json_line_format.terminator,
    "JSON_POOL_BYTES": lambda d, t: d.json_line_format.pool_bytes,
}


def letterbox_for(frame_w: int | None = None, frame_h: int | None = None,
                  net_size: tuple[int, int] | None = None) -> Letterbox:
    """UnitV2-bound: the device's letterbox, or ``geometry.letterbox_for`` into ``net_size``."""
    from parity.targets.unitv2 import DEVICE
    from parity.unitv2 import geometry

    if net_size is None:
        return DEVICE.letterbox(frame_w, frame_h)
    width, height = DEVICE.frame_size
    return geometry.letterbox_for(width if frame_w is None else frame_w,
                                  height if frame_h is None else frame_h, net_size)


def decode_levels(cls_levels: list, dis_levels: list, box: Letterbox,
                  score_threshold: float | None = None) -> list[FirmwareObject]:
    """UnitV2-bound ``Device.decode``."""
    from parity.targets.unitv2 import DEVICE

    return DEVICE.decode(cls_levels, dis_levels, box, score_threshold)


def json_line(objects: list[FirmwareObject], class_names: list[str]) -> str | None:
    """UnitV2-bound ``Device.json_line``."""
    from parity.targets.unitv2 import DEVICE

    return DEVICE.json_line(objects, class_names)


def preprocess_frame_ncnn(frame_bgr: Any, box: Letterbox) -> Any:
    """UnitV2-bound ``Device.preprocess_ncnn``."""
    from parity.targets.unitv2 import DEVICE

    return DEVICE.preprocess_ncnn(frame_bgr, box)


def preprocess_frame_numpy(frame_bgr: Any, box: Letterbox) -> Any:
    """UnitV2-bound ``Device.preprocess``."""
    from parity.targets.unitv2 import DEVICE

    return DEVICE.preprocess(frame_bgr, box)


def __getattr__(name: str) -> Any:
    if name in _DEVICE_NUMBERS:
        from parity.targets.unitv2 import DEVICE, UNITV2

        return _DEVICE_NUMBERS[name](DEVICE, UNITV2)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FirmwareObject",
    "Letterbox",
    "Proposals",
    "decode_levels",
    "firmware_nms",
    "firmware_sort_order",
    "format_float",
    "generate_proposals",
    "json_line",
    "letterbox_for",
    "preprocess_frame_ncnn",
    "preprocess_frame_numpy",
]
