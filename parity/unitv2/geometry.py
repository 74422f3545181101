"""Frame -> net input geometry on the UnitV2: resize the long side, pad to a multiple of 32.

Source: m5stack UnitV2Framework ``main/object_recognition.cpp`` ``detect_nanodet``: long
side scaled to the net's long side, 320 on the UnitV2 (``scale = 320.f / long``, short side
``int(short * scale)``,
truncated); pad to a multiple of 32 with ``copy_make_border``: top/left get ``pad / 2``
(integer division), bottom/right the rest. Boxes map back as ``(v - pad / 2) / scale``.
A net size that rule cannot give (models exported at other sizes) gets a centred
fit-and-pad instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_F32 = np.float32


@dataclass(frozen=True)
class Letterbox:
    """Geometry of frame -> net input (resize, then constant pad to a multiple of 32).

    ``resized_w``/``resized_h`` are the image size inside the padding; when not given they
    are taken as ``net - 2 * pad`` (exact for even pads, which is what 640x480 gives).
    """

    scale: float
    pad_left: int
    pad_top: int
    net_w: int
    net_h: int
    frame_w: int
    frame_h: int
    resized_w: int = -1
    resized_h: int = -1

    def __post_init__(self) -> None:
        if self.resized_w < 0:
            object.__setattr__(self, "resized_w", self.net_w - 2 * self.pad_left)
        if self.resized_h < 0:
            object.__setattr__(self, "resized_h", self.net_h - 2 * self.pad_top)

    @property
    def pad_right(self) -> int:
        return self.net_w - self.resized_w - self.pad_left

    @property
    def pad_bottom(self) -> int:
        return self.net_h - self.resized_h - self.pad_top

    def pads(self) -> np.ndarray:
        """``[left, top, left, top]`` as float32, to shift x1, y1, x2, y2 boxes."""
        return np.array([self.pad_left, self.pad_top] * 2, dtype=_F32)

    def to_frame(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Net-input pixels -> frame pixels, ``(v - pad) / scale`` in float32; no clipping."""
        b = xyxy_boxes(boxes_xyxy)
        return (b - self.pads()) / _F32(self.scale)


def xyxy_boxes(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` as float32 with a last axis of 4 (x1, y1, x2, y2), or ValueError."""
    b = np.asarray(boxes, dtype=_F32)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have a last axis of 4 (x1, y1, x2, y2), got {b.shape}")
    return b


def firmware_letterbox(frame_w: int, frame_h: int, target: int) -> Letterbox:
    """The firmware's resize/pad geometry (``detect_nanodet``): long side to ``target``, pad
    to a multiple of 32; on the UnitV2 640x480 -> 320x240 in 320x256."""
    if min(frame_w, frame_h, target) <= 0:
        raise ValueError(f"frame {frame_w}x{frame_h} and target {target} must be positive")
    w, h = int(frame_w), int(frame_h)
    if w > h:
        scale = _F32(target) / _F32(w)
        w, h = int(target), int(_F32(h) * scale)
    else:
        scale = _F32(target) / _F32(h)
        w, h = int(_F32(w) * scale), int(target)
    if w < 2 or h < 2:
        raise ValueError(f"frame {frame_w}x{frame_h} resizes to {w}x{h}, too small for ncnn")
    wpad = (w + 31) // 32 * 32 - w
    hpad = (h + 31) // 32 * 32 - h
    return Letterbox(
        scale=float(scale),
        pad_left=wpad // 2,
        pad_top=hpad // 2,
        net_w=w + wpad,
        net_h=h + hpad,
        frame_w=int(frame_w),
        frame_h=int(frame_h),
        resized_w=w,
        resized_h=h,
    )


def _fit_and_pad(frame_w: int, frame_h: int, net_w: int, net_h: int) -> Letterbox:
    """Centred fit-and-pad of the frame into exactly net_w x net_h."""
    scale = min(net_w / frame_w, net_h / frame_h)
    resized_w, resized_h = int(frame_w * scale), int(frame_h * scale)
    return Letterbox(
        scale=float(np.float32(scale)),
        pad_left=(net_w - resized_w) // 2,
        pad_top=(net_h - resized_h) // 2,
        net_w=net_w,
        net_h=net_h,
        frame_w=frame_w,
        frame_h=frame_h,
        resized_w=resized_w,
        resized_h=resized_h,
    )


def letterbox_for(frame_w: int, frame_h: int, net_size: tuple[int, int]) -> Letterbox:
    """The one letterbox into ``net_size`` (w, h): the firmware's rule at long side
    ``max(net_size)`` when that yields exactly ``net_size``, else a centred fit-and-pad."""
    firmware = firmware_letterbox(frame_w, frame_h, max(net_size))
    if (firmware.net_w, firmware.net_h) == tuple(net_size):
        return firmware
    return _fit_and_pad(frame_w, frame_h, *net_size)
