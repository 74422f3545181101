"""The parity report and its tolerances as types (encoded and decoded by parity.report_codec).

Schema `nanodet-unitv2/parity-report`, version 3 (and `parity diff`'s document): field order here is the key
order of the JSON document; fields made with `absent()` may be missing.
Measured figures may be inf or nan (written as strings); indices into detection
lists must point into them; histograms have the fixed bins. `check_shape(at)` states
what the types alone cannot.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from parity.json_shape import ShapeError, key_path
from parity.report_codec import ABSENT, Count, Figure, WholeProblem
from parity.tensor_stats import HIST_EDGES
from parity.tolerance_types import Tolerances

SCHEMA = "nanodet-unitv2/parity-report"
SCHEMA_VERSION = 3  # 2: the stage table; 3: baseline (drift from an earlier report)
DIFF_SCHEMA = "nanodet-unitv2/parity-diff"
DIFF_SCHEMA_VERSION = 1
HIST_BINS = len(HIST_EDGES) - 1
LayoutName = Literal["native", "legacy", "plus-native"]  # parity.layouts.Layout
ExtraCheck = Literal["device_input", "json_lines"]  # parity.stage_registry.EXTRA_CHECKS
DetectionRow = tuple[Figure, Figure, Figure, Figure, Figure, Count]  # x1 y1 x2 y2 score label
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


# ----------------------------------------------------------------------------- header

@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    file: str
    sha256: str | None = field(default=None, metadata=ABSENT)


@dataclass(frozen=True, kw_only=True)
class ModelFolderEntry:
    path: str
    layout: str | None = field(default=None, metadata=ABSENT)
    input: dict[str, Any] | None = field(default=None, metadata=ABSENT)
    manifest_sha256: str | None = field(default=None, metadata=ABSENT)
    class_names: list[str] | None = field(default=None, metadata=ABSENT)  # label -> name


@dataclass(frozen=True, kw_only=True)
class Images:
    """The photos checked; `skipped` maps a photo to why it is no camera frame."""

    source: str
    count: Count
    unreadable: list[str]
    skipped: dict[str, str] | None = field(default=None, metadata=ABSENT)
    shard: str | None = None


@dataclass(frozen=True, kw_only=True)
class StageRow:
    """A stage of the run (its descriptor, parity.stage_registry) and whether it ran."""

    name: str
    layout: LayoutName
    status: Literal["ran", "skipped"]
    reason: str | None
    order: int
    reference: bool
    compared_with: list[str]
    checks: list[ExtraCheck]
    colour: str

    @property
    def ran(self) -> bool:
        return self.status == "ran"

    def check_shape(self, at: str) -> None:
        if not self.name:
            raise ShapeError(key_path(at, "name"), "must not be empty")
        if not HEX_COLOUR.fullmatch(self.colour):
            raise ShapeError(key_path(at, "colour"),
                             f"{self.colour[:40]!r} is not a colour #rrggbb")


def check_stage_table(stages: list[StageRow], at: str) -> None:
    """Names once each, in pipeline order; the reference first; predecessors earlier."""
    if not stages:
        raise ShapeError(at, "must list at least 1 stage")
    names = [stage.name for stage in stages]
    for i, stage in enumerate(stages):
        row_at = key_path(at, i)
        if stage.name in names[:i]:
            raise ShapeError(key_path(row_at, "name"), f"{stage.name!r} is listed twice")
        if i and stage.order <= stages[i - 1].order:
            raise ShapeError(key_path(row_at, "order"), "stages are not in pipeline order")
        if stage.reference != (i == 0):
            raise ShapeError(key_path(row_at, "reference"),
                             "the first stage, and only it, is the reference")
        for name in stage.compared_with:
            if name not in names[:i]:
                raise ShapeError(key_path(row_at, "compared_with"),
                                 f"{name!r} is not an earlier stage")


# ----------------------------------------------------------------------------- records

@dataclass(frozen=True, kw_only=True)
class Pair:
    ref: Count
    stage: Count
    iou: Figure
    score_diff: Figure
    edge_px: Figure
    same_label: bool


@dataclass(frozen=True, kw_only=True)
class Match:
    """Reference detections paired with the stage's (IoU >= 0.5), and those left over."""

    pairs: list[Pair]
    missing: list[Count]
    extra: list[Count]


@dataclass(frozen=True, kw_only=True)
class ShapeMismatch:
    """A blob whose shape differs from its predecessor's: (predecessor, stage) shapes."""

    shape_mismatch: tuple[list[Count], list[Count]]


@dataclass(frozen=True, kw_only=True)
class TensorRecord:
    """Mergeable difference figures of one blob on one image (parity.tensor_stats)."""

    count: Count
    max_abs: Figure
    sum_abs: Figure
    nonfinite: Count
    max_rel: Figure
    dot: Figure
    norm_ref: Figure
    norm_stage: Figure
    hist: list[Count]
    argmax_rows: Count | None = field(default=None, metadata=ABSENT)
    argmax_agree: Count | None = field(default=None, metadata=ABSENT)

    def check_shape(self, at: str) -> None:
        if len(self.hist) < HIST_BINS:
            raise ShapeError(key_path(at, "hist"), f"must have at least {HIST_BINS} items, "
                             f"not {len(self.hist)}")
        if len(self.hist) > HIST_BINS:
            raise ShapeError(key_path(at, "hist"), f"must have at most {HIST_BINS} items, "
                             f"not {len(self.hist)}")
        if (self.argmax_rows is None) != (self.argmax_agree is None):
            raise ShapeError(at, "argmax_rows and argmax_agree go together")
        if self.argmax_rows is not None and self.argmax_agree > self.argmax_rows:
            raise ShapeError(key_path(at, "argmax_agree"), f"{self.argmax_agree} is more "
                             f"than argmax_rows {self.argmax_rows}")


@dataclass(frozen=True, kw_only=True)
class StageFailed:
    """A stage that raised on this image (or whose reference did not run on it)."""

    error: str


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """A stage's detections on one image, matched with the reference's, and its tensors."""

    input_sha256: str
    detections: list[DetectionRow]
    match: Match
    compared_with: str | None = field(default=None, metadata=ABSENT)
    tensors: dict[str, ShapeMismatch | TensorRecord] | None = field(default=None, metadata=ABSENT)
    input_max_diff: Figure | None = field(default=None, metadata=ABSENT)
    json_lines: list[str] | None = field(default=None, metadata=ABSENT)


def _points_into(index: int, size: int, at: str, of: str) -> None:
    if index >= size:
        raise ShapeError(at, f"{index} points past the {size} {of} detections")


@dataclass(frozen=True, kw_only=True)
class Record:
    """One camera frame through every stage."""

    image: str
    original_size: tuple[int, int] | None = field(default=None, metadata=ABSENT)
    frame_sha256: str
    frame_size: tuple[int, int]
    input_sha256: str
    stages: dict[str, StageFailed | StageResult]
    reference: list[DetectionRow] | None = field(default=None, metadata=ABSENT)

    def check_shape(self, at: str) -> None:
        """A plain file name; sizes >= 1; matches point into the detection lists."""
        if not self.image or self.image in (".", "..") or \
                any(c in self.image for c in "/\\\0"):
            raise ShapeError(key_path(at, "image"),
                             f"{self.image[:40]!r} is not a plain file name")
        if min(self.frame_size) < 1:
            raise ShapeError(key_path(at, "frame_size"), "must be at least 1x1")
        reference = len(self.reference or [])
        for name, entry in self.stages.items():
            if isinstance(entry, StageFailed):
                continue
            found, match = len(entry.detections), entry.match
            where = key_path(key_path(key_path(at, "stages"), name), "match")
            for i, pair in enumerate(match.pairs):
                pair_at = key_path(key_path(where, "pairs"), i)
                _points_into(pair.ref, reference, key_path(pair_at, "ref"), "reference")
                _points_into(pair.stage, found, key_path(pair_at, "stage"), "stage")
            for key, indices, size, of in (("missing", match.missing, reference, "reference"),
                                           ("extra", match.extra, found, "stage")):
                for i, index in enumerate(indices):
                    _points_into(index, size, key_path(key_path(where, key), i), of)


# ----------------------------------------------------------------------------- summary

@dataclass(frozen=True, kw_only=True)
class BandValues:
    iou: list[Figure]
    score_diff: list[Figure]
    edge_px: list[Figure]


@dataclass(frozen=True, kw_only=True)
class Band:
    """Detections of one score band (of the reference's score; extras by their own)."""

    reference: Count
    matched: Count
    missing: Count
    extra: Count
    label_changes: Count
    matched_fraction: Figure
    min_iou: Figure
    mean_iou: Figure
    max_score_diff: Figure
    max_edge_px: Figure
    values: BandValues


@dataclass(frozen=True, kw_only=True)
class DetectionFigures:
    ap50: Figure
    ap50_all_bands: Figure
    bands: dict[str, Band]


@dataclass(frozen=True, kw_only=True)
class TensorFigures:
    max_abs: Figure
    mean_abs: Figure
    p99_abs: Figure
    max_rel: Figure
    cosine: Figure
    nonfinite: Count
    images: Count
    argmax_agreement: Figure | None = field(default=None, metadata=ABSENT)


@dataclass(frozen=True, kw_only=True)
class ShapeMismatchFigures:
    shape_mismatch: str
    images: Count


@dataclass(frozen=True, kw_only=True)
class StageFigures:
    """One stage over every image (computed from the records alone)."""

    images: Count
    errors: Count
    first_error: str | None = field(default=None, metadata=ABSENT)
    detections: DetectionFigures
    tensors: dict[str, ShapeMismatchFigures | TensorFigures]
    compared_with: str | None
    identical_input_fraction: Figure
    input_max_diff: Figure | None = field(default=None, metadata=ABSENT)
    json_lines: Count | None = field(default=None, metadata=ABSENT)
    json_max_bytes: Count | None = field(default=None, metadata=ABSENT)


# ----------------------------------------------------------------------------- gate

@dataclass(frozen=True, kw_only=True)
class Check:
    """One gate check; a check that could not be computed says why in `skipped` (its value
    is null and it does not fail the gate)."""

    stage: str
    check: str
    value: Figure | str | None
    limit: Figure | str
    passed: bool
    skipped: str | None = field(default=None, metadata=ABSENT)


@dataclass(frozen=True, kw_only=True)
class Gate:
    """The verdict: every check (the same names for a stage whatever happened), and the
    first failing stage in pipeline order."""

    passed: bool
    blamed_stage: str | None
    failing_stages: list[str]
    checks: list[Check]


# ----------------------------------------------------------------------------- baseline

@dataclass(frozen=True, kw_only=True)
class RunSide:
    """One side of a comparison of two runs: its report and what made it."""

    report: str  # the report's file name; "this run" for the run being checked
    checkpoint_sha256: str | None
    manifest_sha256: str | None
    tool: dict[str, Any]
    images: Count


@dataclass(frozen=True, kw_only=True)
class Change:
    """A shown detection (score >= 0.4 on either side) that changed on one image: `new`
    and `lost` have no partner on the other side, `relabelled` changed class, `moved`
    shifted beyond a limit of its stage. `score_shift` is after - before."""

    stage: str
    image: str
    kind: Literal["new", "lost", "relabelled", "moved"]
    before: DetectionRow | None
    after: DetectionRow | None
    iou: Figure | None
    score_shift: Figure | None
    edge_px: Figure | None


@dataclass(frozen=True, kw_only=True)
class StageDrift:
    """One stage over the images it ran on in both runs; pairs are those either side
    shows (score >= 0.4); with no pair, min_iou is 1 and the shifts 0."""

    images: Count
    not_compared: Count  # images where the stage failed in either run
    before: Count  # shown detections of the baseline
    after: Count  # shown detections of this run
    matched: Count
    new: Count
    lost: Count
    label_changes: Count
    min_iou: Figure
    max_score_shift: Figure
    max_edge_px: Figure


@dataclass(frozen=True, kw_only=True)
class Drift:
    """What changed from a baseline report to this run, stage by stage, on the same
    frames (paired by sha256). `not_compared` says why a stage has no figures."""

    baseline: RunSide
    current: RunSide
    same_checkpoint: bool
    changed_versions: dict[str, tuple[str | None, str | None]]  # library -> (before, after)
    stages: dict[str, StageDrift]
    not_compared: dict[str, str]
    changes: list[Change]


# ----------------------------------------------------------------------------- report

@dataclass(frozen=True, kw_only=True)
class Timing:
    """When the run started (ISO 8601, UTC) and the seconds each stage ran, over all images
    (shown as JUnit times; a merged report sums its shards')."""

    started: str
    seconds: dict[str, Figure]

    def check_shape(self, at: str) -> None:
        """`started` an ISO 8601 time with its UTC offset; seconds finite and >= 0."""
        try:
            offset = datetime.fromisoformat(self.started).utcoffset()
        except ValueError:
            offset = None
        if offset is None:
            raise ShapeError(key_path(at, "started"), f"{self.started[:40]!r} is not an "
                             "ISO 8601 time with a UTC offset")
        for stage, value in self.seconds.items():
            if not 0 <= value < math.inf:
                raise ShapeError(key_path(key_path(at, "seconds"), stage),
                                 f"{value} is not a finite number of seconds >= 0")


@dataclass(frozen=True, kw_only=True)
class Report:
    """A `parity check` (or merged) report."""

    schema: Literal["nanodet-unitv2/parity-report"]
    schema_version: Literal[3]
    tool: dict[str, Any]
    checkpoint: Checkpoint
    model_folder: ModelFolderEntry
    images: Images
    stages: list[StageRow]
    tolerances: Tolerances
    records: list[Record]
    summary: dict[str, StageFigures]
    gate: Gate
    blame: dict[str, Any] | None = field(default=None, metadata=ABSENT)
    timing: Timing | None = field(default=None, metadata=ABSENT)
    baseline: Drift | None = field(default=None, metadata=ABSENT)

    def check_shape(self, at: str) -> None:
        """The stage table, tolerances of its stages, records of stages that ran, one
        record per image and as many as images.count."""
        check_stage_table(self.stages, "stages")
        names = [stage.name for stage in self.stages]
        unknown = next((s for s in self.tolerances.stages or {} if s not in names), None)
        if unknown is not None:
            raise WholeProblem("", f"unknown key tolerances.stages.{unknown}")
        ran = {stage.name for stage in self.stages if stage.ran}
        for i, record in enumerate(self.records):
            stranger = next((name for name in record.stages if name not in ran), None)
            if stranger is not None:
                raise ShapeError(f"records[{i}].stages", f"{stranger!r} is not a stage that "
                                 "ran (stages)")
        if self.images.count != len(self.records):
            raise ShapeError("images.count", f"is {self.images.count} but records holds "
                             f"{len(self.records)} images")
        seen: set[str] = set()
        for record in self.records:
            if record.image in seen:
                raise ShapeError("records", f"image {record.image!r} is listed twice")
            seen.add(record.image)


@dataclass(frozen=True, kw_only=True)
class DiffDocument:
    """`parity diff A B`: the drift from report A to report B and its gate."""

    schema: Literal["nanodet-unitv2/parity-diff"]
    schema_version: Literal[1]
    tolerances: Tolerances
    drift: Drift
    gate: Gate
