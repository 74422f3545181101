"""The UnitV2 firmware's NanoDet path, re-implemented in numpy: frame -> input tensor, and
legacy-layout output blobs -> detections -> the JSON line the device prints.

This is the one firmware decode shared by the converter's verification and the parity
harness. Every rule below was read from the firmware source and the library code it runs;
arithmetic is done in float32, in the firmware's order, so results match bit for bit except
where noted under "Known limits".

Sources (repository paths):

* m5stack/UnitV2Framework ``main/object_recognition.cpp``
  - ``main``: ``startFramework("Object Recognition", 640, 480)``; frames are 640x480 BGR.
  - ``loadModelConfig``: NanoDet input blob ``input.1``; output names read as
    ``modelOutputNodes[i].cls_pred`` / ``.dis_pred`` for i = 0, 1, 2 (strides 8, 16, 32).
  - ``detect_nanodet``: long side scaled to 320 (``scale = 320.f / long``, short side
    ``int(short * scale)``, truncated); ``ncnn::Mat::from_pixels_resize(..., PIXEL_BGR, ...)``
    (no channel swap); pad to a multiple of 32 with ``copy_make_border`` BORDER_CONSTANT 0:
    top/left get ``pad / 2`` (integer division), bottom/right the rest; then
    ``substract_mean_normalize`` with mean (103.53, 116.28, 123.675) and norm
    (0.017429, 0.017507, 0.017125). Thresholds ``prob_threshold = 0.4f``,
    ``nms_threshold = 0.5f``. Proposals of strides 8, 16, 32 are concatenated, sorted,
    NMSed, then mapped back: ``(v - pad / 2) / scale``, the right/bottom edge as
    ``(x + width - pad / 2) / scale``; each coordinate clipped to ``[0, frame - 1]``;
    width/height stored as ``x1 - x0`` / ``y1 - y0``.
  - ``generate_proposals``: ``num_class = cls.w``; ``reg_max + 1 = dis.w / 4``; grid width
    ``in_pad.w / stride`` (the padded net input is wider than tall); the class argmax keeps
    the first maximum (strict ``>``); a cell is kept when ``score >= prob_threshold``; the
    4 x (reg_max + 1) logits (rows l, t, r, b) go through ncnn ``Softmax`` (axis 1); each side
    is ``sum_l l * p_l`` times stride; centre ``(j + 0.5f) * stride``, ``(i + 0.5f) * stride``;
    box ``cx - l, cy - t, cx + r, cy + b``, kept as x, y, width, height.
  - ``qsort_descent_inplace``: Hoare quicksort on prob, pivot at ``(left + right) / 2``;
    not stable, so equal probs come out in the order this exact algorithm leaves them.
  - ``nms_sorted_bboxes`` / ``intersection_area``: class-agnostic greedy NMS; a box is dropped
    when ``inter / (area_a + area_b - inter) > 0.5`` against any already kept box (strict
    ``>``, no +1); areas are ``width * height``; intersection is ``cv::Rect_<float>`` ``&``.
  - ``draw_objects``: nothing is sent for 0 objects (``RD_clear`` only); otherwise a
    ``DynamicJsonDocument(1024 * 16)`` gets ``num`` = object count, then per object
    ``obj[i]`` keys prob (float), x, y, w, h (``(int)`` casts: truncation) and type
    (``config_class_names.at(label)``, i.e. the class name string).
* m5stack/UnitV2Framework ``src/framework.cpp``: ``sendPIPEJsonDoc`` adds
  ``running`` = the function name and serialises with ``serializeJson``; ``sendPIPE`` appends
  ``"\\r\\n"`` (``json_line`` returns the line without it).
* m5stack/UnitV2Framework ``README.md``: OpenCV 4.4.0 and the 32-bit
  ``arm-none-linux-gnueabihf`` toolchain. OpenCV 4.4's ``Rect_ operator&=`` computes
  ``w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)`` (same for h) and empties the rect when
  ``w <= 0 || h <= 0``.
* m5stack/UnitV2Framework ``include/ArduinoJson`` (version 6.17.2, ``version.hpp``):
  - ``Configuration.hpp``: not embedded mode on Linux -> double floats, long long ints,
    32-bit slot offsets; ``Variant/VariantSlot.hpp`` + ``Variant/VariantContent.hpp``: a slot
    is 8 (content) + 1 (flags) + 4 (next) + 4 (key pointer) bytes, 24 with armhf padding.
  - ``Memory/MemoryPool.hpp``: 16384-byte pool; every member/element takes one slot; string
    values are copied (``strlen + 1`` bytes, deduplicated by exact match); literal keys are
    not copied. An allocation that does not fit silently fails
    (``Collection/CollectionImpl.hpp``, ``Variant/VariantData.hpp``): the member is not
    added, an element that got a slot but no member prints as ``{}``, a string that does
    not fit prints as ``null``. So past roughly 97 objects the tail of ``obj`` and then
    ``running`` disappear; see ``json_line``. The limit is pool memory, not text length:
    97 objects serialise to only about 5 KB.
  - ``Json/JsonSerializer.hpp``, ``Json/TextFormatter.hpp``, ``Json/EscapeSequence.hpp``,
    ``Numbers/FloatParts.hpp``, ``Numbers/FloatTraits.hpp``: compact output in insertion
    order; floats printed with up to 9 decimals (round half up, trailing zeros removed,
    exponent outside [1e-5, 1e7)); strings escape ``" \\ \\b \\f \\n \\r \\t`` only.
* Tencent/ncnn (the 2020-12 / 2021-02 releases the firmware links; unchanged since):
  ``src/mat_pixel.cpp`` ``from_pixels_resize`` (same size -> no resize),
  ``src/mat_pixel_resize.cpp`` ``resize_bilinear_c3`` (11-bit fixed point bilinear,
  reproduced exactly by ``_resize_bilinear_c3``), ``src/mat.cpp``
  ``substract_mean_normalize`` (a Scale layer: ``x * norm + (-mean * norm)``, two roundings
  on armv7 NEON ``vmla``), ``src/layer/softmax.cpp`` (2-D, axis 1: max, ``expf``,
  sequential sum, divide; ``src/layer/arm/softmax_arm.cpp`` defers to it for elempack 1).

Known limits: ``expf`` is computed as float64 ``exp`` rounded to float32 (glibc's ``expf``
is correctly rounded in all but rare cases); the ncnn pip build may fuse the normalise
multiply-add (1 ulp). Shape errors that the firmware would silently mis-handle (grid rows
not matching the input, a dis width not divisible by 4) raise ``ValueError`` here.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from heads.decode import greedy_suppress

if TYPE_CHECKING:  # pragma: no cover
    import ncnn

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

_F32 = np.float32


# --------------------------------------------------------------------------- geometry


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

    def _pads(self) -> np.ndarray:
        return np.array([self.pad_left, self.pad_top] * 2, dtype=_F32)

    def to_frame(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Net-input pixels -> frame pixels, ``(v - pad) / scale`` in float32; no clipping."""
        b = _xyxy(boxes_xyxy)
        return (b - self._pads()) / _F32(self.scale)

    def from_frame(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Frame pixels -> net-input pixels (inverse of ``to_frame``), float32."""
        b = _xyxy(boxes_xyxy)
        return b * _F32(self.scale) + self._pads()


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=_F32)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have a last axis of 4 (x1, y1, x2, y2), got {b.shape}")
    return b


def letterbox_for(
    frame_w: int = FRAME_W, frame_h: int = FRAME_H, target: int = TARGET_SIZE
) -> Letterbox:
    """The firmware's resize/pad geometry (``detect_nanodet``); 640x480 -> 320x240 in 320x256."""
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


# --------------------------------------------------------------------------- preprocessing


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


def _resize_bilinear_c3(src: np.ndarray, w: int, h: int) -> np.ndarray:
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
    mean: Sequence[float] = MEAN_BGR, norm: Sequence[float] = NORM_BGR
) -> tuple[np.ndarray, np.ndarray]:
    scale = np.array(norm, dtype=_F32)
    bias = -np.array(mean, dtype=_F32) * scale  # ncnn: -mean * norm, in float
    return scale, bias


def preprocess_frame_numpy(
    frame_bgr: np.ndarray,
    box: Letterbox,
    mean: Sequence[float] = MEAN_BGR,
    norm: Sequence[float] = NORM_BGR,
) -> np.ndarray:
    """Frame (HxWx3 uint8 BGR) -> normalised float32 1x3x``net_h``x``net_w`` tensor.

    Reproduces ncnn's fixed-point bilinear resize exactly, pads with 0 before normalising
    (so the pad holds ``-mean * norm``), then ``x * norm + (-mean * norm)`` in float32.
    ``mean``/``norm`` default to the firmware's; a model trained with others differs.
    """
    frame = _check_frame(frame_bgr, box)
    resized = _resize_bilinear_c3(frame, box.resized_w, box.resized_h)
    out = np.zeros((3, box.net_h, box.net_w), dtype=_F32)
    out[
        :, box.pad_top : box.pad_top + box.resized_h, box.pad_left : box.pad_left + box.resized_w
    ] = resized.transpose(2, 0, 1)
    scale, bias = _normalize_constants(mean, norm)
    out = out * scale[:, None, None]
    out = out + bias[:, None, None]
    return out[None]


def preprocess_frame_ncnn(frame_bgr: np.ndarray, box: Letterbox) -> ncnn.Mat:
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
    padded.substract_mean_normalize(list(MEAN_BGR), list(NORM_BGR))
    return padded


# --------------------------------------------------------------------------- decode


@dataclass(frozen=True)
class FirmwareObject:
    """One detection as the firmware reports it.

    ``x, y, w, h`` are the JSON integers; ``x1..y2`` the clipped float32 frame coordinates
    they were truncated from (``w = int(x2 - x1)`` in float32); None when unknown.
    """

    prob: float
    x: int
    y: int
    w: int
    h: int
    label: int
    x1: float | None = None
    y1: float | None = None
    x2: float | None = None
    y2: float | None = None


class Proposals(NamedTuple):
    """Candidates in net-input pixels, firmware order (stride 8, 16, 32; row-major cells)."""

    x: np.ndarray  # float32 left
    y: np.ndarray  # float32 top
    w: np.ndarray  # float32 width = right - left
    h: np.ndarray  # float32 height = bottom - top
    prob: np.ndarray  # float32 max class probability
    label: np.ndarray  # int64 argmax class
    level: np.ndarray  # int64 index into strides


def _as_rows(blob: np.ndarray) -> np.ndarray:
    """float32 view of a blob; leading size-1 axes dropped (a 1 x H x W Mat reads as H x W)."""
    a = np.asarray(blob, dtype=_F32)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def _check_levels(
    cls_levels: Sequence[np.ndarray],
    dis_levels: Sequence[np.ndarray],
    box: Letterbox,
    strides: Sequence[int],
) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    if len(cls_levels) != len(strides) or len(dis_levels) != len(strides):
        raise ValueError(
            f"expected {len(strides)} cls and dis levels (strides {tuple(strides)}), "
            f"got {len(cls_levels)} cls and {len(dis_levels)} dis"
        )
    levels = []
    num_class = None
    for k, (cls, dis, stride) in enumerate(zip(cls_levels, dis_levels, strides)):
        cls, dis = _as_rows(cls), _as_rows(dis)
        if cls.ndim != 2 or dis.ndim != 2:
            raise ValueError(
                f"level {k} (stride {stride}): cls and dis must be 2-D [cells, width] "
                "(leading axes of size 1 allowed), "
                f"got {cls.shape} and {dis.shape}"
            )
        if box.net_w % stride or box.net_h % stride:
            raise ValueError(
                f"net input {box.net_w}x{box.net_h} is not divisible by stride {stride}"
            )
        gw, gh = box.net_w // stride, box.net_h // stride
        if cls.shape[0] != gw * gh or dis.shape[0] != gw * gh:
            raise ValueError(
                f"level {k} (stride {stride}): expected {gh}x{gw}={gh * gw} rows for a "
                f"{box.net_w}x{box.net_h} input, got cls {cls.shape} and dis {dis.shape}"
            )
        if cls.shape[1] < 1:
            raise ValueError(f"level {k} (stride {stride}): cls has no class columns")
        if dis.shape[1] < 4 or dis.shape[1] % 4:
            raise ValueError(
                f"level {k} (stride {stride}): dis width {dis.shape[1]} is not 4 * (reg_max + 1)"
            )
        # reg_max may differ per level: generate_proposals reads dis_pred.w / 4 per level
        if num_class is None:
            num_class = cls.shape[1]
        elif cls.shape[1] != num_class:
            raise ValueError(
                f"level {k} (stride {stride}): {cls.shape[1]} classes differ from "
                f"level 0 ({num_class} classes)"
            )
        levels.append((cls, dis, gw, int(stride)))
    return levels


def _softmax_expectation(logits: np.ndarray) -> np.ndarray:
    """[n, 4, bins] logits -> [n, 4] expected bin index, float32 in ncnn's operation order."""
    m = logits.max(axis=2, keepdims=True)
    e = np.exp((logits - m).astype(np.float64)).astype(_F32)  # expf(x - max)
    # np.cumsum adds in sequence, in float32: the firmware's loop order, bit for bit
    s = np.cumsum(e, axis=2)[:, :, -1]
    p = e / s[:, :, None]
    return np.cumsum(np.arange(logits.shape[2], dtype=_F32) * p, axis=2)[:, :, -1]


def generate_proposals(
    cls_levels: Sequence[np.ndarray],
    dis_levels: Sequence[np.ndarray],
    box: Letterbox,
    strides: Sequence[int] = STRIDES,
    score_threshold: float = PROB_THRESHOLD,
) -> Proposals:
    """Cells with ``max prob >= threshold``, decoded to net-input boxes (firmware order)."""
    levels = _check_levels(cls_levels, dis_levels, box, strides)
    thr = _F32(score_threshold)
    parts: list[tuple[np.ndarray, ...]] = []
    for k, (cls, dis, gw, stride) in enumerate(levels):
        score = cls.max(axis=1)
        keep = np.flatnonzero(score >= thr)
        label = cls[keep].argmax(axis=1).astype(np.int64)
        st = _F32(stride)
        d = _softmax_expectation(dis[keep].reshape(len(keep), 4, dis.shape[1] // 4)) * st
        cx = ((keep % gw).astype(_F32) + _F32(0.5)) * st
        cy = ((keep // gw).astype(_F32) + _F32(0.5)) * st
        x0, y0 = cx - d[:, 0], cy - d[:, 1]
        x1, y1 = cx + d[:, 2], cy + d[:, 3]
        parts.append(
            (x0, y0, x1 - x0, y1 - y0, score[keep], label, np.full(len(keep), k, np.int64))
        )
    cols = [np.concatenate(c) for c in zip(*parts)]
    return Proposals(*cols)


def firmware_sort_order(prob: np.ndarray) -> np.ndarray:
    """Permutation ``qsort_descent_inplace`` applies (descending; its own order among ties)."""
    prob = np.asarray(prob, dtype=_F32)
    n = len(prob)
    if np.unique(prob).size == n:  # distinct keys: every correct sort gives the same order
        return np.argsort(-prob, kind="stable")
    p = prob.tolist()
    perm = list(range(n))
    stack = [(0, n - 1)]
    while stack:
        left, right = stack.pop()
        i, j = left, right
        pivot = p[(left + right) // 2]
        while i <= j:
            while p[i] > pivot:
                i += 1
            while p[j] < pivot:
                j -= 1
            if i <= j:
                p[i], p[j] = p[j], p[i]
                perm[i], perm[j] = perm[j], perm[i]
                i += 1
                j -= 1
        if left < j:
            stack.append((left, j))
        if i < right:
            stack.append((i, right))
    return np.array(perm, dtype=np.int64)


def firmware_nms(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray, iou_threshold: float = NMS_THRESHOLD
) -> np.ndarray:
    """Indices kept by ``nms_sorted_bboxes`` on boxes already in sorted order (float32 math)."""
    x, y, w, h = (np.asarray(v, dtype=_F32) for v in (x, y, w, h))
    area = w * h
    right, bottom = x + w, y + h
    thr = _F32(iou_threshold)

    def suppresses(first: int, last: int) -> np.ndarray:
        rows, cols = slice(first, last), slice(first, None)
        iw = np.minimum(right[cols], right[rows, None]) - np.maximum(x[cols], x[rows, None])
        ih = np.minimum(bottom[cols], bottom[rows, None]) - np.maximum(y[cols], y[rows, None])
        inter = np.where((iw > 0) & (ih > 0), iw * ih, _F32(0)).astype(_F32)
        union = (area[cols] + area[rows, None]) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return inter / union > thr

    return greedy_suppress(len(x), suppresses)


def decode_levels(
    cls_levels: list[np.ndarray],
    dis_levels: list[np.ndarray],
    box: Letterbox,
    strides: Sequence[int] = STRIDES,
    score_threshold: float = PROB_THRESHOLD,
    nms_iou: float = NMS_THRESHOLD,
) -> list[FirmwareObject]:
    """Legacy NanoDet outputs -> the firmware's detections, in its output order.

    ``cls_levels[i]``: [H_i*W_i, C] probabilities (sigmoid inside the model);
    ``dis_levels[i]``: [H_i*W_i, 4*(reg_max+1)] raw logits, bins of l, t, r, b in turn.
    """
    p = generate_proposals(cls_levels, dis_levels, box, strides, score_threshold)
    order = firmware_sort_order(p.prob)
    x, y, w, h = p.x[order], p.y[order], p.w[order], p.h[order]
    keep = firmware_nms(x, y, w, h, nms_iou)
    x, y, w, h = x[keep], y[keep], w[keep], h[keep]
    prob, label = p.prob[order][keep], p.label[order][keep]

    pad_l, pad_t, scale = _F32(box.pad_left), _F32(box.pad_top), _F32(box.scale)
    x0 = (x - pad_l) / scale
    y0 = (y - pad_t) / scale
    x1 = ((x + w) - pad_l) / scale
    y1 = ((y + h) - pad_t) / scale
    xmax, ymax = _F32(box.frame_w - 1), _F32(box.frame_h - 1)
    x0, x1 = (np.maximum(np.minimum(v, xmax), _F32(0)) for v in (x0, x1))
    y0, y1 = (np.maximum(np.minimum(v, ymax), _F32(0)) for v in (y0, y1))
    bw, bh = x1 - x0, y1 - y0
    return [
        FirmwareObject(
            prob=float(prob[k]),
            x=int(float(x0[k])),
            y=int(float(y0[k])),
            w=int(float(bw[k])),
            h=int(float(bh[k])),
            label=int(label[k]),
            x1=float(x0[k]),
            y1=float(y0[k]),
            x2=float(x1[k]),
            y2=float(y1[k]),
        )
        for k in range(len(keep))
    ]


# --------------------------------------------------------------------------- JSON


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
