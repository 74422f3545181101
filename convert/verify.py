"""convert's verification: a parity check of the staging folder, plus the rewrite's figures.

The verdict is parity's (`parity.folder_check.check_photos` with the `verify`
profile of parity/data/tolerances.toml): the checkpoint's own head and decode
against the folder's ncnn model, decoded as its consumer decodes it, on the
bundled photos as camera frames. Only the `ncnn` stage runs beside the
reference, so this takes seconds; `parity check` runs every stage.

Beside the verdict, two figures only a NanoDet-Plus rewrite has: how many
reference detections need the stride-64 level the legacy layout lacks, and the
rewrite's residuals (clamped edges, cells competing with a folded prediction),
and which shown reference detections have a clamped edge: the summary names them,
so a failed verification says when the legacy layout cannot show a box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heads.decode import Detections, LevelOutput, levels_from_logits
from heads.loader import LoadedModel
from heads.plus_to_legacy import ClampedCell, clamped_cells, rewrite_residuals
from parity.detect import native_detections
from parity.detection_stats import BANDS
from parity.folder_check import IN_MEMORY_SOURCE, FolderCheck, check_photos
from parity.gate import read_tolerances
from parity.images import UnusableImage, in_memory
from parity.match import match_detections
from parity.preprocess import frame_to_tensor
from parity.report_types import Band, Record, StageResult
from parity.unitv2.geometry import Letterbox

PROFILE = "verify"
STAGE = "ncnn"  # the folder's model as the device's ncnn runs it
SHOWN_BAND = "firmware"  # detections the firmware shows (score >= its threshold)
STRIDE64_IOU = 0.95  # a detection kept without the stride-64 level overlaps its twin this much
SAME_BOX_IOU = 0.999  # a clamped cell's own box and a reference detection: the same detection


@dataclass
class RewriteFigures:
    """What the legacy layout cannot express of a NanoDet-Plus model, on the photos."""

    stride64_only: int | None = None  # reference detections that need the stride-64 level
    residuals: dict[str, int] | None = None  # Plus rewrite: clamped / competing cells
    clamped: list[ClampedDetection] | None = None  # Plus rewrite: shown detections clamped


@dataclass(frozen=True)
class ClampedDetection:
    """A shown reference detection whose cell the legacy layout clamps (see ClampedCell)."""

    image: str
    row: tuple[float, ...]  # x1, y1, x2, y2, score, label in frame pixels
    cell: ClampedCell
    shift_px: float  # frame pixels its worst clamped edge moves outwards

    def describe(self, class_names: Sequence[str]) -> str:
        side, distance = min(self.cell.sides.items(), key=lambda item: item[1])
        return (f"{class_names[int(self.row[5])]} {self.row[4]:.2f} in {self.image}: {side} "
                f"edge {distance:.2f} stride past its cell's centre at stride "
                f"{self.cell.stride}, shown {self.shift_px:.1f} px further out")


@dataclass
class Verification:
    """The verdict of the `verify` profile and what it found."""

    check: FolderCheck
    class_names: list[str]
    figures: RewriteFigures = field(default_factory=RewriteFigures)

    @property
    def passed(self) -> bool:
        return self.check.passed

    @property
    def band(self) -> Band:
        return self.check.report.summary[STAGE].detections.bands[SHOWN_BAND]

    @property
    def reference_detections(self) -> int:
        """Reference detections the firmware would show."""
        return self.band.reference

    @property
    def images(self) -> int:
        return self.check.report.images.count

    @property
    def skipped(self) -> dict[str, str]:
        return dict(self.check.report.images.skipped or {})

    @property
    def stride64_only(self) -> int | None:
        return self.figures.stride64_only

    @property
    def residuals(self) -> dict[str, int] | None:
        return self.figures.residuals

    @property
    def missing(self) -> list[dict[str, Any]]:
        """Shown reference detections the ncnn model has no partner for."""
        return [self._describe(record.image, record.reference[i])
                for record, result in self._results() for i in result.match.missing
                if _shown(record.reference[i])]

    @property
    def extra(self) -> list[dict[str, Any]]:
        """Shown ncnn detections without a reference partner."""
        return [self._describe(record.image, result.detections[j])
                for record, result in self._results() for j in result.match.extra
                if _shown(result.detections[j])]

    @property
    def failing_checks(self) -> list[dict[str, Any]]:
        return [{"check": c.check, "value": c.value, "limit": c.limit}
                for c in self.check.report.gate.checks if not c.passed]

    def summary(self) -> str:
        band, limits = self.band, self.check.report.tolerances.detections
        return (f"{band.matched}/{band.reference} shown reference detections matched "
                f"(profile {PROFILE}: IoU >= {limits.min_iou}, |score diff| <= "
                f"{limits.max_score_diff}) on {self.images} photos; {band.missing} missing, "
                f"{band.extra} extra; worst IoU {band.min_iou:.4f}, worst score diff "
                f"{band.max_score_diff:.4f}, worst edge {band.max_edge_px:.3f} px"
                + self._clamped_note())

    def _clamped_note(self) -> str:
        """Why boxes may be off: shown detections whose edge the legacy layout clamps."""
        clamped = self.figures.clamped or []
        if not clamped:
            return ""
        worst = max(clamped, key=lambda c: c.shift_px)
        return (f"; {len(clamped)} shown detection{'s' if len(clamped) > 1 else ''} "
                "cannot be drawn in the legacy layout (its box must contain the firmware's cell "
                "centre, (x+0.5)*stride; an edge short of it is clamped to that centre), "
                f"worst {worst.describe(self.class_names)}")

    def to_dict(self) -> dict[str, Any]:
        """manifest.json's `verification` (besides `status`)."""
        band = self.band
        return {"profile": PROFILE, "stage": STAGE, "images": self.images,
                "reference_detections": band.reference, "matched": band.matched,
                "missing": self.missing, "extra": self.extra, "worst_iou": band.min_iou,
                "worst_score_diff": band.max_score_diff, "worst_edge_px": band.max_edge_px,
                "failing_checks": self.failing_checks,
                "stride64_only": self.stride64_only, "residuals": self.residuals,
                "clamped_detections": self._clamped_dicts(),
                "skipped": self.skipped}

    def _clamped_dicts(self) -> list[dict[str, Any]] | None:
        if self.figures.clamped is None:
            return None
        return [{**self._describe(c.image, c.row), "sides": {k: round(v, 4) for k, v in
                                                             c.cell.sides.items()},
                 "stride": c.cell.stride, "shift_px": round(c.shift_px, 2)}
                for c in self.figures.clamped]

    def _results(self) -> list[tuple[Record, StageResult]]:
        return [(record, record.stages[STAGE]) for record in self.check.report.records
                if isinstance(record.stages.get(STAGE), StageResult)]

    def _describe(self, image: str, row: Sequence[float]) -> dict[str, Any]:
        *box, score, label = row
        return {"image": image, "score": round(float(score), 4),
                "class": self.class_names[int(label)],
                "box": [round(float(v), 2) for v in box]}


def _shown(row: Sequence[float]) -> bool:
    low, high = BANDS[SHOWN_BAND]
    return low <= row[4] < high


def verify_folder(loaded: LoadedModel, folder: Path, frames: list[tuple[str, np.ndarray]],
                  input_size: tuple[int, int], layout: str, config: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Verification:
    """Check `folder` (manifest.json written) against the checkpoint `loaded` came from.

    `progress(done, total)` is called as each photo is checked."""
    check = check_photos(loaded.checkpoint.path, folder, in_memory(frames), IN_MEMORY_SOURCE,
                         config=config, tolerances=read_tolerances(None, PROFILE),
                         only={STAGE}, progress=progress)
    figures = rewrite_figures(loaded, frames, input_size, layout)
    return Verification(check, list(loaded.spec.class_names), figures)


def rewrite_figures(loaded: LoadedModel, frames: list[tuple[str, np.ndarray]],
                    input_size: tuple[int, int], layout: str) -> RewriteFigures:
    """Stride-64 needs and rewrite residuals of a NanoDet-Plus model on the camera frames."""
    spec = loaded.spec
    figures = RewriteFigures()
    rewritten = spec.is_plus and layout == "legacy"
    if len(spec.head.strides) <= 3 and not rewritten:
        return figures
    for photo in in_memory(frames):
        try:
            frame = photo.load().frame
        except UnusableImage:
            continue  # the check lists it as skipped
        feed, box = frame_to_tensor(frame, *input_size, spec.mean_bgr, spec.std_bgr)
        with torch.no_grad():
            levels = levels_from_logits(loaded.model(torch.from_numpy(feed)), spec.head.strides)
        reference = native_detections(levels, spec.head.centre_offset, box)
        if rewritten:
            found = rewrite_residuals(levels)
            figures.residuals = {k: (figures.residuals or {}).get(k, 0) + n
                                 for k, n in found.items()}
            figures.clamped = (figures.clamped or []) + clamped_detections(
                photo.name, levels, reference, box, spec.head.centre_offset)
        if len(levels) > 3:
            figures.stride64_only = (figures.stride64_only or 0) + _needing_stride64(
                reference, native_detections(levels[:3], spec.head.centre_offset, box))
    return figures


def clamped_detections(image: str, levels: list[LevelOutput], reference: Detections,
                       box: Letterbox, centre_offset: float) -> list[ClampedDetection]:
    """The detections of `reference` (a Plus model's, frame pixels) whose cell is clamped:
    each clamped cell decoded alone, as the reference decodes it, found among them."""
    found = []
    for cell in clamped_cells(levels):
        alone = native_detections(_only_cell(levels, cell), centre_offset, box)
        if not len(alone) or not len(reference):
            continue
        same = match_detections(reference, alone, min_iou=SAME_BOX_IOU)
        for i, _ in same.pairs:
            if reference.labels[i] == alone.labels[0] and reference.scores[i] == alone.scores[0]:
                row = (*map(float, reference.boxes[i]), float(reference.scores[i]),
                       float(reference.labels[i]))
                found.append(ClampedDetection(image, row, cell, cell.shift / box.scale))
    return found


def _only_cell(levels: list[LevelOutput], cell: ClampedCell) -> list[LevelOutput]:
    """`levels` with every class score zero except those of `cell`."""
    alone = []
    for index, level in enumerate(levels):
        cls = np.zeros_like(level.cls)
        if index == cell.level:
            cls[cell.cell] = level.cls[cell.cell]
        alone.append(LevelOutput(cls, level.dis, level.height, level.width, level.stride))
    return alone


def _needing_stride64(reference: Detections, without: Detections) -> int:
    return len(match_detections(reference, without, min_iou=STRIDE64_IOU).missing)
