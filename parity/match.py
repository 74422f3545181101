"""Match a stage's detections to the reference's: optimal assignment by IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from heads.decode import Detections, pairwise_iou


@dataclass(frozen=True)
class Matching:
    """Reference index i paired with stage index j, plus who was left over."""

    pairs: np.ndarray  # [K, 2] (reference index, stage index)
    iou: np.ndarray  # [K]
    score_diff: np.ndarray  # [K] |stage - reference|
    edge_error: np.ndarray  # [K] largest |edge difference| in pixels
    same_label: np.ndarray  # [K] bool
    missing: np.ndarray  # reference indices without a partner
    extra: np.ndarray  # stage indices without a partner


def match_detections(reference: Detections, stage: Detections, min_iou: float = 0.5) -> Matching:
    """Hungarian assignment maximising total IoU; pairs below `min_iou` do not count."""
    n, m = len(reference), len(stage)
    pairs = np.zeros((0, 2), np.int64)
    ious = np.zeros(0)
    if n and m:
        iou = pairwise_iou(reference.boxes, stage.boxes)
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= min_iou
        pairs = np.stack([rows[good], cols[good]], 1).astype(np.int64)
        ious = iou[pairs[:, 0], pairs[:, 1]]
    ref_i, stage_j = pairs[:, 0], pairs[:, 1]
    edges = np.abs(reference.boxes[ref_i].astype(np.float64) - stage.boxes[stage_j]).max(1) \
        if len(pairs) else np.zeros(0)
    return Matching(
        pairs=pairs, iou=ious,
        score_diff=np.abs(reference.scores[ref_i].astype(np.float64) - stage.scores[stage_j]),
        edge_error=edges, same_label=reference.labels[ref_i] == stage.labels[stage_j],
        missing=np.setdiff1d(np.arange(n), ref_i), extra=np.setdiff1d(np.arange(m), stage_j))
