"""Detection differences of a stage against the reference, per image (parity.summary merges
them).

Bands by score: `firmware` (>= 0.4, what the device shows), `mid` (0.2-0.4)
and `low` (below 0.2), where conversions legitimately differ more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from heads.decode import Detections, pairwise_iou
from parity.match import match_detections

BANDS = {"firmware": (0.4, 1.01), "mid": (0.2, 0.4), "low": (0.0, 0.2)}


def band_of(score: float) -> str:
    for name, (low, high) in BANDS.items():
        if low <= score < high:
            return name
    return "low"


def class_name(label: Any, names: Sequence[str]) -> str:
    """The class name of a detection's label, or `class N` when the names lack it."""
    index = int(label)
    return names[index] if 0 <= index < len(names) else f"class {index}"


def detections_to_list(found: Detections) -> list[list[float]]:
    """[[x1, y1, x2, y2, score, label], ...] rounded for JSON."""
    return [[round(float(v), 3) for v in box] + [round(float(s), 6), int(label)]
            for box, s, label in zip(found.boxes, found.scores, found.labels)]


def detections_from_list(rows: list[list[float]]) -> Detections:
    if not rows:
        return Detections.empty()
    array = np.asarray(rows, dtype=np.float64)
    return Detections(array[:, :4].astype(np.float32), array[:, 4].astype(np.float32),
                      array[:, 5].astype(np.int64))


def detection_record(reference: Detections, stage: Detections) -> dict[str, Any]:
    """Optimal matching of one image: pairs with their figures, missing and extra."""
    m = match_detections(reference, stage, min_iou=0.5)
    pairs = [{"ref": int(i), "stage": int(j), "iou": round(float(iou), 6),
              "score_diff": round(float(sd), 6), "edge_px": round(float(edge), 4),
              "same_label": bool(same)}
             for (i, j), iou, sd, edge, same in zip(m.pairs, m.iou, m.score_diff, m.edge_error,
                                                    m.same_label)]
    return {"pairs": pairs, "missing": [int(i) for i in m.missing],
            "extra": [int(j) for j in m.extra]}


def average_precision(scored: list[tuple[float, bool]], positives: int) -> float:
    """All-point interpolated AP of (score, true positive) pairs."""
    if positives == 0:
        return 1.0 if not scored else 0.0
    scored = sorted(scored, key=lambda t: -t[0])
    tp = np.cumsum([hit for _, hit in scored])
    precision = tp / np.arange(1, len(scored) + 1)
    recall = tp / positives
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * envelope))


def ap50_hits(reference: Detections, stage: Detections) -> list[tuple[float, bool]]:
    """VOC-style: stage detections by score, TP when a same-class reference box at IoU >= 0.5
    is still free."""
    if len(stage) == 0:
        return []
    iou = pairwise_iou(stage.boxes, reference.boxes) if len(reference) else None
    taken = np.zeros(len(reference), bool)
    hits = []
    for j in np.argsort(-stage.scores, kind="stable"):
        hit = False
        if iou is not None:
            candidates = np.where((reference.labels == stage.labels[j]) & ~taken
                                  & (iou[j] >= 0.5))[0]
            if candidates.size:
                best = candidates[np.argmax(iou[j][candidates])]
                taken[best] = hit = True
        hits.append((float(stage.scores[j]), hit))
    return hits
