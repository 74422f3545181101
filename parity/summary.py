"""Per-stage figures computed from per-image records (and nothing else).

Records hold sums, histograms and matched pairs, so a sharded run's records
merge here into exactly the unsharded figures.
"""

from __future__ import annotations

import numpy as np

from heads.decode import Detections
from parity.detection_stats import (
    BANDS,
    ap50_hits,
    average_precision,
    band_of,
    detections_from_list,
)
from parity.report_types import (
    Band,
    BandValues,
    DetectionFigures,
    DetectionRow,
    Match,
    Record,
    ShapeMismatch,
    ShapeMismatchFigures,
    StageFigures,
    StageResult,
    StageRow,
    TensorFigures,
    TensorRecord,
)
from parity.stage_registry import JSON_LINES
from parity.tensor_stats import HIST_EDGES


def summarize(records: list[Record], stages: list[StageRow]) -> dict[str, StageFigures]:
    """Figures of every stage of the stage table that ran, from the records alone."""
    return {stage.name: stage_figures(records, stage) for stage in stages if stage.ran}


def stage_figures(records: list[Record], stage: StageRow) -> StageFigures:
    """One stage over every record."""
    name = stage.name
    entries = [(r, r.stages[name]) for r in records if name in r.stages]
    errors = [(r.image, e.error) for r, e in entries if not isinstance(e, StageResult)]
    ok = [(r, e) for r, e in entries if isinstance(e, StageResult)]
    blobs: dict[str, list[TensorRecord | ShapeMismatch]] = {}
    for _, e in ok:
        for blob, record in (e.tensors or {}).items():
            blobs.setdefault(blob, []).append(record)
    compared = {e.compared_with for _, e in ok} - {None}
    shared_input = [e.input_sha256 == r.input_sha256 for r, e in ok]
    diffs = [e.input_max_diff for _, e in ok if e.input_max_diff is not None]
    lines = [line for _, e in ok for line in e.json_lines or []]
    json_lines = JSON_LINES in stage.checks
    return StageFigures(
        images=len(entries), errors=len(errors),
        first_error=f"{errors[0][0]}: {errors[0][1]}" if errors else None,
        detections=merge_detections([(r.reference or [], e.detections, e.match)
                                     for r, e in ok]),
        tensors={blob: merge_tensors(rs) for blob, rs in blobs.items()},
        compared_with=min(compared) if compared else None,
        identical_input_fraction=sum(shared_input) / len(ok) if ok else 1.0,
        input_max_diff=max(diffs) if diffs else None,
        json_lines=len(lines) if json_lines else None,
        json_max_bytes=max((len(line) for line in lines), default=0) if json_lines else None)


def _p99(hist: np.ndarray) -> float:
    total = hist.sum()
    if total == 0:
        return 0.0
    index = int(np.searchsorted(np.cumsum(hist), 0.99 * total))
    return float(HIST_EDGES[min(index + 1, len(HIST_EDGES) - 1)])  # the bin's upper edge


def merge_tensors(records: list[TensorRecord | ShapeMismatch]
                  ) -> TensorFigures | ShapeMismatchFigures:
    """Aggregate figures of one blob over images."""
    mismatched = [r for r in records if isinstance(r, ShapeMismatch)]
    if mismatched:
        ref, stage = mismatched[0].shape_mismatch
        return ShapeMismatchFigures(shape_mismatch=f"{list(ref)} vs {list(stage)}",
                                    images=len(records))
    count = sum(r.count for r in records)
    hist = np.sum([r.hist for r in records], axis=0)
    norms = sum(r.norm_ref for r in records) * sum(r.norm_stage for r in records)
    rows = sum(r.argmax_rows or 0 for r in records)
    return TensorFigures(
        max_abs=max(r.max_abs for r in records),
        mean_abs=sum(r.sum_abs for r in records) / max(count, 1),
        p99_abs=_p99(hist),
        max_rel=max(r.max_rel for r in records),
        cosine=sum(r.dot for r in records) / np.sqrt(norms) if norms > 0 else 1.0,
        nonfinite=sum(r.nonfinite for r in records),
        images=len(records),
        argmax_agreement=sum(r.argmax_agree or 0 for r in records) / rows if rows else None)


def _shown(found: Detections) -> Detections:
    """Only what the firmware shows (score >= 0.4)."""
    keep = found.scores >= BANDS["firmware"][0]
    return Detections(found.boxes[keep], found.scores[keep], found.labels[keep])


class _BandTally:
    """Counts and matched-pair values of one score band, as images are added."""

    def __init__(self) -> None:
        self.reference = self.matched = self.missing = self.extra = self.label_changes = 0
        self.iou: list[float] = []
        self.score_diff: list[float] = []
        self.edge_px: list[float] = []

    def band(self) -> Band:
        return Band(
            reference=self.reference, matched=self.matched, missing=self.missing,
            extra=self.extra, label_changes=self.label_changes,
            matched_fraction=self.matched / self.reference if self.reference else 1.0,
            min_iou=min(self.iou, default=1.0),
            mean_iou=float(np.mean(self.iou)) if self.iou else 1.0,
            max_score_diff=max(self.score_diff, default=0.0),
            max_edge_px=max(self.edge_px, default=0.0),
            values=BandValues(iou=self.iou, score_diff=self.score_diff, edge_px=self.edge_px))


def merge_detections(images: list[tuple[list[DetectionRow], list[DetectionRow], Match]]
                     ) -> DetectionFigures:
    """Aggregate over images of (reference rows, stage rows, their matching)."""
    tallies = {name: _BandTally() for name in BANDS}
    scored: list[tuple[float, bool]] = []
    scored_shown: list[tuple[float, bool]] = []
    positives = positives_shown = 0
    for reference_rows, stage_rows, match in images:
        reference = detections_from_list(reference_rows)
        stage = detections_from_list(stage_rows)
        for score in reference.scores:
            tallies[band_of(float(score))].reference += 1
        for pair in match.pairs:
            tally = tallies[band_of(float(reference.scores[pair.ref]))]
            tally.matched += 1
            tally.label_changes += not pair.same_label
            tally.iou.append(pair.iou)
            tally.score_diff.append(pair.score_diff)
            tally.edge_px.append(pair.edge_px)
        for i in match.missing:
            tallies[band_of(float(reference.scores[i]))].missing += 1
        for j in match.extra:
            tallies[band_of(float(stage.scores[j]))].extra += 1
        scored += ap50_hits(reference, stage)
        positives += len(reference)
        shown_ref, shown_stage = _shown(reference), _shown(stage)
        scored_shown += ap50_hits(shown_ref, shown_stage)
        positives_shown += len(shown_ref)
    return DetectionFigures(ap50=average_precision(scored_shown, positives_shown),
                            ap50_all_bands=average_precision(scored, positives),
                            bands={name: tally.band() for name, tally in tallies.items()})
