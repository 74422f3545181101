"""Stage outputs -> detections in frame pixels, all under a device firmware's rules.

Every stage is judged by what a user would see: best class per cell, score
>= the device's threshold (0.4 on the UnitV2), class-agnostic NMS at its IoU (0.5),
boxes mapped to the frame and clipped to [0, size - 1]. Legacy-layout outputs go
through the firmware decode itself; native outputs through NanoDet's geometry with
those same rules. The device is the UnitV2's unless a caller passes another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from heads.decode import Detections, LevelOutput, native_decode
from parity.targets import Device
from parity.targets.unitv2 import DEVICE as UNITV2_DEVICE
from parity.unitv2.decode import FirmwareObject
from parity.unitv2.geometry import Letterbox


def from_firmware_objects(objects: list[FirmwareObject]) -> Detections:
    if not objects:
        return Detections.empty()
    return Detections(
        boxes=np.array([[o.x1, o.y1, o.x2, o.y2] for o in objects], np.float32),
        scores=np.array([o.prob for o in objects], np.float32),
        labels=np.array([o.label for o in objects], np.int64))


def legacy_layout_detections(outputs: dict[str, np.ndarray], names: Sequence[str],
                             box: Letterbox, score_threshold: float | None = None,
                             device: Device = UNITV2_DEVICE) -> Detections:
    """cls/dis blobs (names in firmware order) -> the firmware's detections.

    `score_threshold`: the device's unless given (parity compares down to a lower one)."""
    levels = len(device.strides)
    cls = [outputs[names[2 * i]] for i in range(levels)]
    dis = [outputs[names[2 * i + 1]] for i in range(levels)]
    return from_firmware_objects(device.decode(cls, dis, box, score_threshold))


def native_detections(levels: Sequence[LevelOutput], centre_offset: float, box: Letterbox,
                      score_threshold: float | None = None,
                      device: Device = UNITV2_DEVICE) -> Detections:
    """NanoDet geometry, the device's rules, frame pixels."""
    threshold = device.score_threshold if score_threshold is None else score_threshold
    found = native_decode(levels, centre_offset, (box.net_w, box.net_h), threshold,
                          device.nms_iou, max_detections=1 << 30, class_agnostic=True,
                          multi_label=False)
    boxes = box.to_frame(found.boxes)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, box.frame_w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, box.frame_h - 1)
    return Detections(boxes, found.scores, found.labels)


def split_native_output(output: np.ndarray, num_classes: int, net_w: int, net_h: int,
                        strides: Sequence[int]) -> list[LevelOutput]:
    """NanoDet-Plus's one [N, C + 4(R+1)] output -> LevelOutputs (grids ceil(size/stride))."""
    levels, start = [], 0
    for stride in strides:
        h, w = math.ceil(net_h / stride), math.ceil(net_w / stride)
        rows = output[start:start + h * w]
        levels.append(LevelOutput(rows[:, :num_classes], rows[:, num_classes:], h, w, stride))
        start += h * w
    if start != len(output):
        raise ValueError(f"output has {len(output)} rows, the grids of strides {list(strides)} "
                         f"at {net_w}x{net_h} need {start}")
    return levels
