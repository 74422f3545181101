"""The M5Stack UnitV2's NanoDet path, re-implemented in numpy and shared by convert and parity.

By job: ``geometry`` (frame size, ``Letterbox``, ``letterbox_for``), ``preprocess``
(bit-exact ncnn resize, pad and normalise), ``decode`` (proposals, sort, NMS,
``decode_levels``) and ``json_line`` (ArduinoJson float format and pool, the printed line);
the device's numbers are in ``constants``. Source: m5stack UnitV2Framework
``main/object_recognition.cpp`` and the libraries it links (each module names its part).
"""

from parity.unitv2.constants import (
    FRAME_H,
    FRAME_W,
    INPUT_BLOB,
    JSON_POOL_BYTES,
    JSON_SLOT_BYTES,
    LINE_TERMINATOR,
    MEAN_BGR,
    NMS_THRESHOLD,
    NORM_BGR,
    PROB_THRESHOLD,
    RUNNING_NAME,
    STRIDES,
    TARGET_SIZE,
)
from parity.unitv2.decode import (
    FirmwareObject,
    Proposals,
    decode_levels,
    firmware_nms,
    firmware_sort_order,
    generate_proposals,
)
from parity.unitv2.geometry import Letterbox, letterbox_for
from parity.unitv2.json_line import format_float, json_line
from parity.unitv2.preprocess import preprocess_frame_ncnn, preprocess_frame_numpy

__all__ = [
    "FRAME_H",
    "FRAME_W",
    "INPUT_BLOB",
    "JSON_POOL_BYTES",
    "JSON_SLOT_BYTES",
    "LINE_TERMINATOR",
    "MEAN_BGR",
    "NMS_THRESHOLD",
    "NORM_BGR",
    "PROB_THRESHOLD",
    "RUNNING_NAME",
    "STRIDES",
    "TARGET_SIZE",
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
