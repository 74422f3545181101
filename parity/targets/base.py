"""What a target is: the consumer a model folder is converted for, and what it expects.

A ``Target`` names the ncnn compatibility tables its library is linted against, the blob
names it looks up, the net input it feeds (size, normalisation) and the model.json it
reads. A target that is a camera with its own firmware also has a ``Device``: everything
parity emulates bit for bit (frame, letterbox, ncnn preprocessing, decode, the JSON line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from heads.spec import NANODET_MEAN_BGR
from parity.unitv2.model_json import ModelJsonFormat

if TYPE_CHECKING:  # pragma: no cover
    import ncnn
    import numpy as np

    from parity.ncnn_tables import NcnnTables
    from parity.unitv2.decode import FirmwareObject
    from parity.unitv2.geometry import Letterbox

# The emulation (numpy, torch for NMS) is imported where a device first uses it, so that
# reading the registry (e.g. for --target's choices in --help) stays light.


@dataclass(frozen=True)
class Normalisation:
    """``x * norm + (-mean * norm)`` per BGR channel, as ncnn's ``substract_mean_normalize``."""

    mean_bgr: tuple[float, float, float]
    norm_bgr: tuple[float, float, float]


@dataclass(frozen=True)
class LegacyBlobs:
    """Blob names of the legacy NanoDet layout: one input, cls and dis outputs per stride."""

    input: str
    strides: tuple[int, ...]

    def level_outputs(self) -> list[tuple[str, str]]:
        """(cls, dis) blob names per level, strides ascending."""
        return [(f"cls_pred_stride_{s}", f"dis_pred_stride_{s}") for s in self.strides]

    def outputs(self) -> list[str]:
        """cls, dis per stride, in the order the firmware extracts them."""
        return [name for level in self.level_outputs() for name in level]


NANODET_NORMALISATION = Normalisation(mean_bgr=NANODET_MEAN_BGR,
                                      norm_bgr=(0.017429, 0.017507, 0.017125))
"""NanoDet's defaults (norm = 1 / std, rounded as its ncnn demo and the UnitV2 write it)."""

LEGACY_NANODET_BLOBS = LegacyBlobs(input="input.1", strides=(8, 16, 32))
"""The names NanoDet's legacy ncnn export and demo use; the UnitV2 firmware's input name."""


@dataclass(frozen=True)
class JsonLineFormat:
    """The line a device prints per frame: ArduinoJson pool size, ``running`` name, ending."""

    pool_bytes: int
    running_name: str
    terminator: str


@dataclass(frozen=True)
class Device:
    """A camera whose firmware runs the model; parity emulates it bit for bit."""

    name: str
    frame_size: tuple[int, int]  # w, h of the camera frames
    net_long_side: int  # letterbox: the frame's long side is scaled to this
    normalisation: Normalisation
    strides: tuple[int, ...]  # levels the firmware decodes
    score_threshold: float  # a cell is shown when its best class prob >= this
    nms_iou: float  # a box is dropped when its IoU with a kept one is > this
    json_line_format: JsonLineFormat

    def letterbox(self, frame_w: int | None = None, frame_h: int | None = None) -> Letterbox:
        """The firmware's geometry for a frame (its camera's size when not given)."""
        width, height = self.frame_size
        from parity.unitv2.geometry import firmware_letterbox

        return firmware_letterbox(width if frame_w is None else frame_w,
                                  height if frame_h is None else frame_h, self.net_long_side)

    @property
    def net_size(self) -> tuple[int, int]:
        """w, h of the net input for the camera's frames."""
        box = self.letterbox()
        return box.net_w, box.net_h

    def preprocess(self, frame_bgr: np.ndarray, box: Letterbox) -> np.ndarray:
        """The frame as the firmware feeds it (numpy, bit-exact): 1x3xHxW float32."""
        norm = self.normalisation
        from parity.unitv2.preprocess import preprocess_frame_numpy

        return preprocess_frame_numpy(frame_bgr, box, norm.mean_bgr, norm.norm_bgr)

    def preprocess_ncnn(self, frame_bgr: np.ndarray, box: Letterbox) -> ncnn.Mat:
        """The firmware's own ncnn calls (pip ncnn): the 3-D input Mat."""
        norm = self.normalisation
        from parity.unitv2.preprocess import preprocess_frame_ncnn

        return preprocess_frame_ncnn(frame_bgr, box, norm.mean_bgr, norm.norm_bgr)

    def decode(self, cls_levels: Sequence[np.ndarray], dis_levels: Sequence[np.ndarray],
               box: Letterbox, score_threshold: float | None = None) -> list[FirmwareObject]:
        """Legacy-layout outputs -> the detections the firmware shows, in its order.

        ``score_threshold``: a lower one to see more (parity compares down to 0.1)."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        from parity.unitv2.decode import decode_levels

        return decode_levels(list(cls_levels), list(dis_levels), box, strides=self.strides,
                             score_threshold=threshold, nms_iou=self.nms_iou)

    def json_line(self, objects: list[FirmwareObject], class_names: list[str]) -> str | None:
        """The line the firmware prints for ``objects`` (without its ending); None if empty."""
        fmt = self.json_line_format
        from parity.unitv2.detection_line import json_line

        return json_line(objects, class_names, pool_bytes=fmt.pool_bytes,
                         running_name=fmt.running_name)


@dataclass(frozen=True)
class Target:
    """A consumer of converted model folders (``convert --target``, manifest ``target``)."""

    name: str
    description: str
    ncnn_tables: tuple[str, ...]  # compatibility tables its ncnn is linted against
    blobs: LegacyBlobs
    net_size: tuple[int, int]  # w, h of the net input it feeds (convert's default)
    normalisation: Normalisation
    model_json: ModelJsonFormat  # read beside a legacy-layout model
    device: Device | None = None  # None: no firmware to emulate

    @property
    def tables(self) -> list[NcnnTables]:
        """The loaded ncnn compatibility tables, most likely library first."""
        from parity.ncnn_tables import ncnn_tables

        return [ncnn_tables(name) for name in self.ncnn_tables]
