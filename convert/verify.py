"""Quick verification: does the NCNN model in the folder detect what the checkpoint does?

The original model (native head, native decode) and the produced NCNN model
(decoded as its consumer decodes it: the firmware for the legacy layout) see
the same tensors of the bundled photos; their detections are matched by IoU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from heads.decode import Detections, levels_from_logits
from heads.loader import LoadedModel
from heads.plus_to_legacy import rewrite_residuals
from parity.detect import legacy_layout_detections, native_detections, split_native_output
from parity.images import UnusableImage, in_memory
from parity.match import match_detections
from parity.preprocess import frame_to_tensor
from parity.runners.ncnn_runner import NcnnRunner
from parity.unitv2 import PROB_THRESHOLD

MIN_IOU = 0.95
MAX_SCORE_DIFF = 0.01
MIN_MATCHED_FRACTION = 0.99


@dataclass
class VerifyResult:
    images: int = 0
    reference_detections: int = 0
    matched: int = 0
    missing: list[dict] = field(default_factory=list)
    extra: list[dict] = field(default_factory=list)
    worst_iou: float = 1.0
    worst_score_diff: float = 0.0
    worst_edge_px: float = 0.0
    stride64_only: int | None = None  # reference detections that need the stride-64 level
    residuals: dict[str, int] | None = None  # Plus rewrite: clamped / competing cells
    skipped: dict[str, str] = field(default_factory=dict)  # image -> why it is no camera frame

    @property
    def matched_fraction(self) -> float:
        return self.matched / self.reference_detections if self.reference_detections else 1.0

    @property
    def borderline(self) -> int:
        """Unmatched detections within MAX_SCORE_DIFF of the 0.4 threshold."""
        return sum(d["borderline"] for d in self.missing + self.extra)

    @property
    def passed(self) -> bool:
        hard_extra = [e for e in self.extra if not e["borderline"]]
        return self.matched_fraction >= MIN_MATCHED_FRACTION and not hard_extra

    def to_dict(self) -> dict:
        return {**asdict(self), "matched_fraction": self.matched_fraction,
                "borderline": self.borderline,
                "passed": self.passed,
                "tolerances": {"min_iou": MIN_IOU, "max_score_diff": MAX_SCORE_DIFF,
                               "min_matched_fraction": MIN_MATCHED_FRACTION}}

    def summary(self) -> str:
        return (f"{self.matched}/{self.reference_detections} reference detections matched "
                f"(IoU >= {MIN_IOU}, |score diff| <= {MAX_SCORE_DIFF}) on {self.images} photos; "
                f"{len(self.missing)} missing, {len(self.extra)} extra, "
                f"{self.borderline} at the threshold; worst IoU {self.worst_iou:.4f}, "
                f"worst score diff {self.worst_score_diff:.4f}, "
                f"worst edge {self.worst_edge_px:.3f} px")


def _near_threshold(score: float) -> bool:
    return abs(score - PROB_THRESHOLD) <= MAX_SCORE_DIFF


def _describe(image: str, det: Detections, index: int, names: list[str]) -> dict:
    score = float(det.scores[index])
    return {"image": image, "score": round(score, 4), "class": names[det.labels[index]],
            "box": [round(float(v), 2) for v in det.boxes[index]],
            "borderline": _near_threshold(score)}


def verify_folder(loaded: LoadedModel, param: Path, weights: Path, layout: str, input_name: str,
                  output_names: list[str], input_size: tuple[int, int],
                  frames: list[tuple[str, np.ndarray]]) -> VerifyResult:
    """Match the checkpoint's detections with the folder's NCNN model's on `frames`.

    Each image first becomes the 640x480 camera frame the UnitV2 would see
    (parity.images); images that cannot are listed in `skipped`."""
    runner = NcnnRunner(param, weights, input_name, output_names)
    spec = loaded.spec
    result = VerifyResult()
    width, height = input_size
    for photo in in_memory(frames):
        try:
            camera = photo.load()
        except UnusableImage as exc:
            result.skipped[photo.name] = str(exc)
            continue
        image, frame = camera.name, camera.frame
        feed, box = frame_to_tensor(frame, width, height)
        with torch.no_grad():
            logits = loaded.model(torch.from_numpy(feed))
        levels = levels_from_logits(logits, spec.head.strides)
        reference = native_detections(levels, spec.head.centre_offset, box)
        if spec.is_plus and layout == "legacy":
            found = rewrite_residuals(levels)
            result.residuals = {k: (result.residuals or {}).get(k, 0) + n
                                for k, n in found.items()}
        if len(levels) > 3:
            without = native_detections(levels[:3], spec.head.centre_offset, box)
            kept = match_detections(reference, without, min_iou=MIN_IOU)
            result.stride64_only = (result.stride64_only or 0) + len(kept.missing)
        outputs = runner.infer(feed)
        if layout == "legacy":
            converted = legacy_layout_detections(outputs, output_names, box)
        else:
            native = split_native_output(outputs[output_names[0]], spec.head.num_classes, width,
                                         height, spec.head.strides)
            converted = native_detections(native, spec.head.centre_offset, box)
        _accumulate(result, image, reference, converted, list(spec.class_names))
    return result


def _accumulate(result: VerifyResult, image: str, reference: Detections, converted: Detections,
                names: list[str]) -> None:
    result.images += 1
    result.reference_detections += len(reference)
    matching = match_detections(reference, converted, min_iou=0.5)
    good = (matching.iou >= MIN_IOU) & (matching.score_diff <= MAX_SCORE_DIFF) \
        & matching.same_label
    result.matched += int(good.sum())
    if len(matching.pairs):
        result.worst_iou = min(result.worst_iou, float(matching.iou.min()))
        result.worst_score_diff = max(result.worst_score_diff, float(matching.score_diff.max()))
        result.worst_edge_px = max(result.worst_edge_px, float(matching.edge_error.max()))
    for i in [*matching.pairs[~good, 0], *matching.missing]:
        result.missing.append(_describe(image, reference, int(i), names))
    for j in matching.extra:
        result.extra.append(_describe(image, converted, int(j), names))
