"""NanoDet's own post-processing in numpy: the reference every stage is compared to.

Legacy NanoDetHead puts a cell's prior at (x + 0.5) * stride, NanoDet-Plus at
x * stride. Both take the softmax over each side's bins, the expectation times
the stride as the distance, clamp boxes to the input, then NMS
(nanodet/model/head/gfl_head.py, nanodet_plus_head.py, module/nms.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LevelOutput:
    """One pyramid level in the legacy layout: rows are cells in row-major order."""

    cls: np.ndarray  # [H*W, C] class probabilities (after sigmoid)
    dis: np.ndarray  # [H*W, 4*(R+1)] raw distance logits, sides l, t, r, b
    height: int
    width: int
    stride: int


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2 (float32, net-input pixels unless mapped)
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N] int

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                          np.zeros(0, np.int64))


def levels_from_logits(logits: Sequence[tuple[torch.Tensor, torch.Tensor]],
                       strides: Sequence[int]) -> list[LevelOutput]:
    """Raw head logits (batch of one) -> LevelOutputs with sigmoid applied to classes."""
    levels = []
    for (cls, dis), stride in zip(logits, strides):
        _, _, h, w = cls.shape
        levels.append(LevelOutput(
            cls=torch.sigmoid(cls[0]).reshape(cls.shape[1], -1).T.contiguous().numpy(),
            dis=dis[0].reshape(dis.shape[1], -1).T.contiguous().numpy(),
            height=h, width=w, stride=stride))
    return levels


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def expected_distances(dis: np.ndarray) -> np.ndarray:
    """[N, 4*(R+1)] logits -> [N, 4] expected distances in stride units."""
    bins = dis.shape[1] // 4
    prob = softmax(dis.reshape(-1, 4, bins).astype(np.float64))
    return (prob * np.arange(bins)).sum(-1)


def cell_centres(height: int, width: int, stride: int, offset: float) -> np.ndarray:
    """[H*W, 2] prior centres (x, y) in input pixels, row-major."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([(xs.ravel() + offset) * stride, (ys.ravel() + offset) * stride], 1)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, 4] x [M, 4] xyxy -> [N, M] IoU in float64 (no +1 pixel convention)."""
    a = a.astype(np.float64)[:, None]
    b = b.astype(np.float64)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def greedy_suppress(count: int, suppresses: Callable[[int, int], np.ndarray],
                    block: int = 256) -> np.ndarray:
    """Greedy NMS over `count` items already in priority order: positions kept.

    `suppresses(first, last)` is the [last - first, count - first] bool matrix of
    "item first + i suppresses item first + j"; it is asked for a block of rows at
    a time, so memory stays bounded however many candidates a broken model emits.
    """
    alive = np.ones(count, dtype=bool)
    kept: list[int] = []
    for first in range(0, count, block):
        last = min(first + block, count)
        if not alive[first:last].any():
            continue
        matrix = suppresses(first, last)
        for i in range(first, last):
            if alive[i]:
                kept.append(i)
                alive[i + 1:] &= ~matrix[i - first, i + 1 - first:]
    return np.asarray(kept, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices kept, highest score first; suppresses IoU > threshold."""
    order = np.argsort(-scores, kind="stable")
    ordered = boxes[order]
    kept = greedy_suppress(
        len(order),
        lambda first, last: pairwise_iou(ordered[first:last], ordered[first:]) > iou_threshold)
    return order[kept]


def native_decode(levels: Sequence[LevelOutput], centre_offset: float,
                  input_size: tuple[int, int], score_threshold: float = 0.05,
                  nms_iou: float = 0.6, max_detections: int = 100,
                  class_agnostic: bool = False, multi_label: bool = True) -> Detections:
    """Decode like NanoDet: boxes clamped to `input_size` (w, h), then NMS.

    NanoDet's defaults are multi-label (every class above the threshold is a
    candidate), class-aware NMS at 0.6, 100 boxes. `multi_label=False,
    class_agnostic=True` gives the firmware's rule (best class per cell) with
    the model's own geometry, for like-for-like comparison.
    """
    all_boxes, all_scores, all_labels = [], [], []
    width, height = input_size
    for level in levels:
        centres = cell_centres(level.height, level.width, level.stride, centre_offset)
        if multi_label:
            cells, labels = np.nonzero(level.cls > score_threshold)
            scores = level.cls[cells, labels]
        else:
            labels = level.cls.argmax(1)
            scores = level.cls[np.arange(len(labels)), labels]
            cells = np.nonzero(scores > score_threshold)[0]
            labels, scores = labels[cells], scores[cells]
        if cells.size == 0:
            continue
        dist = expected_distances(level.dis[cells]) * level.stride
        c = centres[cells]
        boxes = np.stack([c[:, 0] - dist[:, 0], c[:, 1] - dist[:, 1],
                          c[:, 0] + dist[:, 2], c[:, 1] + dist[:, 3]], 1)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        all_boxes.append(boxes)
        all_scores.append(scores)
        all_labels.append(labels)
    if not all_boxes:
        return Detections.empty()
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores).astype(np.float32)
    labels = np.concatenate(all_labels).astype(np.int64)
    if class_agnostic:
        keep = nms(boxes, scores, nms_iou)
    else:  # separate classes by shifting them apart, as batched NMS does
        offset = labels[:, None] * (max(width, height) * 4.0 + 1.0)
        keep = nms(boxes + offset, scores, nms_iou)
    keep = keep[:max_detections]
    return Detections(boxes[keep].astype(np.float32), scores[keep], labels[keep])
