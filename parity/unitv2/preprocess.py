"""Frame -> the UnitV2's net input tensor, bit-exact: ncnn's resize, pad and normalise.

Source: m5stack UnitV2Framework ``main/object_recognition.cpp`` ``detect_nanodet``:
``ncnn::Mat::from_pixels_resize(..., PIXEL_BGR, ...)`` (no channel swap), pad with
``copy_make_border`` BORDER_CONSTANT 0, then ``substract_mean_normalize`` with the firmware's
mean and norm. Library code, Tencent/ncnn (the 2020-12 / 2021-02 releases the firmware
links): ``src/mat_pixel.cpp`` ``from_pixels_resize`` (same size -> no resize),
``src/mat_pixel_resize.cpp`` ``resize_bilinear_c3`` (11-bit fixed point bilinear,
reproduced exactly by ``resize_bilinear_c3``), ``src/mat.cpp`` ``substract_mean_normalize``
(a Scale layer: ``x * norm + (-mean * norm)``, two roundings on armv7 NEON ``vmla``).

Known limit: the ncnn pip build may fuse the normalise multiply-add (1 ulp).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from parity.unitv2.geometry import Letterbox

if TYPE_CHECKING:  # pragma: no cover
    import ncnn

_F32 = np.float32


def _check_frame(frame_bgr: np.ndarray, box: Letterbox) -> np.ndarray:
    frame = np.asarray(frame_bgr)
    if frame.dtype != np.uint8 or frame.shape != (box.frame_h, box.frame_w, 3):
        raise ValueError(
            f"frame must be uint8 of shape ({box.frame_h}, {box.frame_w}, 3) BGR, "
            f"got {frame.dtype} {frame.shape}"
        )
    return np.ascontiguousarray(frame)


def _resize_coeffs(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source index and 11-bit weights per output index, as ncnn's resize_bilinear computes them."""
    scale = src_len / dst_len  # double, as in ncnn
    f = ((np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5).astype(_F32)
    s = np.floor(f).astype(np.int64)
    f = f - s.astype(_F32)
    low = s < 0
    s[low], f[low] = 0, _F32(0)
    high = s >= src_len - 1
    s[high], f[high] = src_len - 2, _F32(1)

    def to_short(v: np.ndarray) -> np.ndarray:  # (short)clamp((int)(v +/- 0.5f))
        r = np.trunc(v + np.where(v >= 0, _F32(0.5), _F32(-0.5)).astype(_F32))
        return np.clip(r, -32768, 32767).astype(np.int32)

    a0 = to_short((_F32(1) - f) * _F32(2048))
    a1 = to_short(f * _F32(2048))
    return s, a0, a1


def resize_bilinear_c3(src: np.ndarray, w: int, h: int) -> np.ndarray:
    """ncnn ``resize_bilinear_c3`` (fixed point), bit-exact, vectorised."""
    srch, srcw = src.shape[:2]
    if (srcw, srch) == (w, h):
        return src.copy()
    xs, a0, a1 = _resize_coeffs(srcw, w)
    ys, b0, b1 = _resize_coeffs(srch, h)
    wa0, wa1 = a0[None, :, None], a1[None, :, None]

    def horizontal(rows: np.ndarray) -> np.ndarray:  # gather as uint8, then widen
        left = rows[:, xs, :].astype(np.int32)
        left *= wa0
        right = rows[:, xs + 1, :].astype(np.int32)
        right *= wa1
        left += right
        left >>= 4
        return left

    r0 = horizontal(src[ys])
    r0 *= b0[:, None, None]
    r0 >>= 16
    r1 = horizontal(src[ys + 1])
    r1 *= b1[:, None, None]
    r1 >>= 16
    r0 += r1
    r0 += 2
    r0 >>= 2
    return np.clip(r0, 0, 255).astype(np.uint8)


def _normalize_constants(
    mean: Sequence[float], norm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    scale = np.array(norm, dtype=_F32)
    bias = -np.array(mean, dtype=_F32) * scale  # ncnn: -mean * norm, in float
    return scale, bias


def preprocess_frame_numpy(
    frame_bgr: np.ndarray,
    box: Letterbox,
    mean: Sequence[float],
    norm: Sequence[float],
) -> np.ndarray:
    """Frame (HxWx3 uint8 BGR) -> normalised float32 1x3x``net_h``x``net_w`` tensor.

    Reproduces ncnn's fixed-point bilinear resize exactly, pads with 0 before normalising
    (so the pad holds ``-mean * norm``), then ``x * norm + (-mean * norm)`` in float32.
    ``mean``/``norm``: BGR order, the firmware's or a model's own.
    """
    frame = _check_frame(frame_bgr, box)
    resized = resize_bilinear_c3(frame, box.resized_w, box.resized_h)
    out = np.zeros((3, box.net_h, box.net_w), dtype=_F32)
    out[
        :, box.pad_top : box.pad_top + box.resized_h, box.pad_left : box.pad_left + box.resized_w
    ] = resized.transpose(2, 0, 1)
    scale, bias = _normalize_constants(mean, norm)
    out = out * scale[:, None, None]
    out = out + bias[:, None, None]
    return out[None]


def preprocess_frame_ncnn(frame_bgr: np.ndarray, box: Letterbox, mean: Sequence[float],
                          norm: Sequence[float]) -> ncnn.Mat:
    """The firmware's own calls through the pip ``ncnn`` binding; returns the 3-D input Mat."""
    import ncnn

    frame = _check_frame(frame_bgr, box)
    mat = ncnn.Mat.from_pixels_resize(
        frame, ncnn.Mat.PixelType.PIXEL_BGR, box.frame_w, box.frame_h, box.resized_w, box.resized_h
    )
    padded = ncnn.copy_make_border(
        mat,
        box.pad_top,
        box.pad_bottom,
        box.pad_left,
        box.pad_right,
        ncnn.BorderType.BORDER_CONSTANT,
        0.0,
    )
    padded.substract_mean_normalize(list(mean), list(norm))
    return padded
