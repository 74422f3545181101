"""convert's verification: a parity check of the staging folder, plus the rewrite's figures.

The verdict is parity's (`parity.folder_check.check_photos` with the `verify`
profile of parity/data/tolerances.toml): the checkpoint's own head and decode
against the folder's ncnn model, decoded as its consumer decodes it, on the
bundled photos as camera frames. Only the `ncnn` stage runs beside the
reference, so this takes seconds; `parity check` runs every stage.

Beside the verdict, two figures only a NanoDet-Plus rewrite has: how many
reference detections need the stride-64 level the legacy layout lacks, and the
rewrite's residuals (clamped edges, cells competing with a folded prediction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heads.decode import Detections, levels_from_logits
from heads.loader import LoadedModel
from heads.plus_to_legacy import rewrite_residuals
from parity.detect import native_detections
from parity.detection_stats import BANDS
from parity.folder_check import IN_MEMORY_SOURCE, FolderCheck, check_photos
from parity.gate import read_tolerances
from parity.images import UnusableImage, in_memory
from parity.match import match_detections
from parity.preprocess import frame_to_tensor
from parity.report_types import Band, Record, StageResult

PROFILE = "verify"
STAGE = "ncnn"  # the folder's model as the device's ncnn runs it
SHOWN_BAND = "firmware"  # detections the firmware shows (score >= its threshold)
STRIDE64_IOU = 0.95  # a detection kept without the stride-64 level overlaps its twin this much


@dataclass
class RewriteFigures:
    """What the legacy layout cannot express of a NanoDet-Plus model, on the photos."""

    stride64_only: int | None = None  # reference detections that need the stride-64 level
    residuals: dict[str, int] | None = None  # Plus rewrite: clamped / competing cells


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
                f"{band.max_score_diff:.4f}, worst edge {band.max_edge_px:.3f} px")

    def to_dict(self) -> dict[str, Any]:
        """manifest.json's `verification` (besides `status`)."""
        band = self.band
        return {"profile": PROFILE, "stage": STAGE, "images": self.images,
                "reference_detections": band.reference, "matched": band.matched,
                "missing": self.missing, "extra": self.extra, "worst_iou": band.min_iou,
                "worst_score_diff": band.max_score_diff, "worst_edge_px": band.max_edge_px,
                "failing_checks": self.failing_checks,
                "stride64_only": self.stride64_only, "residuals": self.residuals,
                "skipped": self.skipped}

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
    if len(spec.head.strides) <= 3 and not (spec.is_plus and layout == "legacy"):
        return figures
    for photo in in_memory(frames):
        try:
            frame = photo.load().frame
        except UnusableImage:
            continue  # the check lists it as skipped
        feed, box = frame_to_tensor(frame, *input_size)
        with torch.no_grad():
            levels = levels_from_logits(loaded.model(torch.from_numpy(feed)), spec.head.strides)
        if spec.is_plus and layout == "legacy":
            found = rewrite_residuals(levels)
            figures.residuals = {k: (figures.residuals or {}).get(k, 0) + n
                                 for k, n in found.items()}
        if len(levels) > 3:
            figures.stride64_only = (figures.stride64_only or 0) + _needing_stride64(
                native_detections(levels, spec.head.centre_offset, box),
                native_detections(levels[:3], spec.head.centre_offset, box))
    return figures


def _needing_stride64(reference: Detections, without: Detections) -> int:
    return len(match_detections(reference, without, min_iou=STRIDE64_IOU).missing)
