"""Legacy-layout NanoDet outputs -> the UnitV2's detections, as its firmware decodes them.

Float32 arithmetic in the firmware's order, so results match bit for bit. Source: m5stack
UnitV2Framework ``main/object_recognition.cpp``:

* ``detect_nanodet``: proposals of strides 8, 16, 32 (the device's) are concatenated, sorted, NMSed, then
  mapped back: ``(v - pad / 2) / scale``, the right/bottom edge as
  ``(x + width - pad / 2) / scale``; each coordinate clipped to ``[0, frame - 1]``;
  width/height stored as ``x1 - x0`` / ``y1 - y0``.
* ``generate_proposals``: ``num_class = cls.w``; ``reg_max + 1 = dis.w / 4``; grid width
  ``in_pad.w / stride`` (the padded net input is wider than tall); the class argmax keeps
  the first maximum (strict ``>``); a cell is kept when ``score >= prob_threshold``; the
  4 x (reg_max + 1) logits (rows l, t, r, b) go through ncnn ``Softmax`` (axis 1); each side
  is ``sum_l l * p_l`` times stride; centre ``(j + 0.5f) * stride``, ``(i + 0.5f) * stride``;
  box ``cx - l, cy - t, cx + r, cy + b``, kept as x, y, width, height.
* ``qsort_descent_inplace``: Hoare quicksort on prob, pivot at ``(left + right) / 2``;
  not stable, so equal probs come out in the order this exact algorithm leaves them.
* ``nms_sorted_bboxes`` / ``intersection_area``: class-agnostic greedy NMS; a box is dropped
  when ``inter / (area_a + area_b - inter) > nms_threshold`` (0.5 on the UnitV2) against any
  already kept box (strict ``>``, no +1); areas are ``width * height``; intersection is ``cv::Rect_<float>`` ``&``
  (OpenCV 4.4: ``w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)``, same for h, empty when
  ``w <= 0 || h <= 0``).

Tencent/ncnn ``src/layer/softmax.cpp`` (2-D, axis 1: max, ``expf``, sequential sum, divide;
``src/layer/arm/softmax_arm.cpp`` defers to it for elempack 1).

Known limits: ``expf`` is computed as float64 ``exp`` rounded to float32 (glibc's ``expf``
is correctly rounded in all but rare cases). Shape errors that the firmware would silently
mis-handle (grid rows not matching the input, a dis width not divisible by 4) raise
``ValueError`` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from heads.decode import greedy_suppress
from parity.unitv2.geometry import Letterbox

_F32 = np.float32


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
    *,
    strides: Sequence[int],
    score_threshold: float,
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
    x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray, iou_threshold: float
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
    *,
    strides: Sequence[int],
    score_threshold: float,
    nms_iou: float,
) -> list[FirmwareObject]:
    """Legacy NanoDet outputs -> the firmware's detections, in its output order.

    ``cls_levels[i]``: [H_i*W_i, C] probabilities (sigmoid inside the model);
    ``dis_levels[i]``: [H_i*W_i, 4*(reg_max+1)] raw logits, bins of l, t, r, b in turn.
    """
    p = generate_proposals(cls_levels, dis_levels, box, strides=strides,
                           score_threshold=score_threshold)
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
