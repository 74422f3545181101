"""The M5Stack UnitV2 with its firmware and the early-2021 ncnn it links.

Sources: m5stack UnitV2Framework ``main/object_recognition.cpp`` (``main``: 640x480 frames;
``loadModelConfig``: input blob ``input.1``, strides 8, 16, 32, model.json parsed into a
``DynamicJsonDocument(1024 * 8)``; ``detect_nanodet``: long side 320, mean and norm,
``prob_threshold = 0.4f``, ``nms_threshold = 0.5f``; ``draw_objects``: a
``DynamicJsonDocument(1024 * 16)``), ``src/framework.cpp`` (``running`` name, ``"\\r\\n"``).
Its ncnn: master around commit 6afc736 (2021-02-22) with the headers of release 20201208
(``convert/ncnn_lint.py``). The emulation itself is in ``parity.unitv2``.
"""

from __future__ import annotations

from parity.targets.base import (
    LEGACY_NANODET_BLOBS,
    NANODET_NORMALISATION,
    Device,
    JsonLineFormat,
    Target,
)
from parity.unitv2.model_json import ModelJsonFormat

DEVICE = Device(
    name="UnitV2",
    frame_size=(640, 480),
    net_long_side=320,
    normalisation=NANODET_NORMALISATION,
    strides=LEGACY_NANODET_BLOBS.strides,
    score_threshold=0.4,
    nms_iou=0.5,
    json_line_format=JsonLineFormat(pool_bytes=1024 * 16, running_name="Object Recognition",
                                    terminator="\r\n"),
)

UNITV2 = Target(
    name="unitv2",
    description="the M5Stack UnitV2 firmware and the ncnn it links (early 2021)",
    ncnn_tables=("ncnn-20210222", "ncnn-20201208"),
    blobs=LEGACY_NANODET_BLOBS,
    net_size=DEVICE.net_size,
    normalisation=DEVICE.normalisation,
    model_json=ModelJsonFormat(levels=len(DEVICE.strides), pool_bytes=1024 * 8),
    device=DEVICE,
)
