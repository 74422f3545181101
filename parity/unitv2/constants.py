"""The UnitV2's fixed numbers for NanoDet, as m5stack UnitV2Framework sets them.

Sources: ``main/object_recognition.cpp`` (``main``: 640x480 frames; ``loadModelConfig``:
input blob ``input.1``, strides 8, 16, 32; ``detect_nanodet``: long side 320, mean and
norm, ``prob_threshold = 0.4f``, ``nms_threshold = 0.5f``; ``draw_objects``: a
``DynamicJsonDocument(1024 * 16)``), ``src/framework.cpp`` (``running`` name, ``"\\r\\n"``)
and ArduinoJson 6.17.2 (24-byte variant slots on armhf; see ``json_line``).
"""

from __future__ import annotations

FRAME_W, FRAME_H = 640, 480
TARGET_SIZE = 320
MEAN_BGR = (103.53, 116.28, 123.675)
NORM_BGR = (0.017429, 0.017507, 0.017125)
STRIDES = (8, 16, 32)
PROB_THRESHOLD = 0.4
NMS_THRESHOLD = 0.5
INPUT_BLOB = "input.1"
RUNNING_NAME = "Object Recognition"
LINE_TERMINATOR = "\r\n"
JSON_POOL_BYTES = 1024 * 16
JSON_SLOT_BYTES = 24
