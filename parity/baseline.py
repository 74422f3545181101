"""Release-to-release drift: each stage's detections against the same stage of an earlier
report on the same frames (`parity check --baseline`, `parity merge --baseline`,
`parity diff`).

Frames are paired by their sha256, so the two runs must have seen the same
camera frames; the checkpoint may differ (a retrained model against the released
one), and `Drift.same_checkpoint` says which case it is. Detections are paired
as the parity check pairs them (optimal IoU >= 0.5, down to score 0.1); only
pairs that either side shows (score >= 0.4) count, so a detection that crosses
0.4 is a score shift, not a new or lost one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.errors import InputError
from heads.decode import Detections
from parity.detection_stats import BANDS, detections_from_list
from parity.gate import baseline_checks, evaluate, verdict
from parity.match import Matching, match_detections
from parity.report import read_report
from parity.report_types import (
    DIFF_SCHEMA,
    DIFF_SCHEMA_VERSION,
    Change,
    DetectionRow,
    DiffDocument,
    Drift,
    Record,
    Report,
    RunSide,
    StageDrift,
    StageResult,
)
from parity.tolerance_types import BaselineLimits, Tolerances

SHOWN = BANDS["firmware"][0]  # the firmware shows detections scoring at least this
THIS_RUN = "this run"


def run_side(report: Report, name: str) -> RunSide:
    """`report` as one side of a comparison, called `name`."""
    return RunSide(report=name, checkpoint_sha256=report.checkpoint.sha256,
                   manifest_sha256=report.model_folder.manifest_sha256, tool=report.tool,
                   images=report.images.count)


def paired_records(baseline: Report, current: Report, where: Path | str, subset: bool
                   ) -> list[tuple[Record, Record]]:
    """(baseline record, current record) of each frame, paired by sha256: the same image
    name first, then equal frames under other names in name order. Every current frame
    must be in the baseline and, unless `subset` (a shard), every baseline frame in the
    current run; else an InputError on `where`."""
    by_name = {(r.frame_sha256, r.image): r for r in baseline.records}
    pairs = {r.image: by_name.pop((r.frame_sha256, r.image)) for r in current.records
             if (r.frame_sha256, r.image) in by_name}
    waiting: dict[str, list[Record]] = {}
    for record in by_name.values():
        waiting.setdefault(record.frame_sha256, []).append(record)
    strangers = []
    for record in current.records:
        queue = waiting.get(record.frame_sha256)
        if record.image in pairs:
            continue
        if queue:
            pairs[record.image] = queue.pop(0)
        else:
            strangers.append(record.image)
    left = [record.image for queue in waiting.values() for record in queue]
    if strangers:
        raise InputError(where, f"holds other images: {len(strangers)} of the "
                         f"{len(current.records)} frames compared are not in it (first: "
                         f"{strangers[0]}); a baseline must come from the same images")
    if left and not subset:
        raise InputError(where, f"holds other images: {len(left)} of its "
                         f"{len(baseline.records)} frames are not in the run compared with "
                         f"it (first: {left[0]}); a baseline must come from the same images")
    return [(pairs[record.image], record) for record in current.records]


@dataclass
class _StageTally:
    """A stage's drift figures and changes, as image pairs are added."""

    stage: str
    limits: BaselineLimits
    images: int = 0
    not_compared: int = 0
    before: int = 0
    after: int = 0
    new: int = 0
    lost: int = 0
    label_changes: int = 0
    iou: list[float] = field(default_factory=list)
    score_shift: list[float] = field(default_factory=list)
    edge_px: list[float] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    def add(self, image: str, before: list[DetectionRow], after: list[DetectionRow]) -> None:
        old, new = detections_from_list(before), detections_from_list(after)
        self.images += 1
        self.before += int((old.scores >= SHOWN).sum())
        self.after += int((new.scores >= SHOWN).sum())
        matching = match_detections(old, new)
        self._add_pairs(image, before, after, old, new, matching)
        for i in matching.missing:
            if old.scores[i] >= SHOWN:
                self.lost += 1
                self.changes.append(self._change(image, "lost", before[i], None))
        for j in matching.extra:
            if new.scores[j] >= SHOWN:
                self.new += 1
                self.changes.append(self._change(image, "new", None, after[j]))

    def _add_pairs(self, image: str, before: list[DetectionRow], after: list[DetectionRow],
                   old: Detections, new: Detections, matching: Matching) -> None:
        for (i, j), iou, edge, same in zip(matching.pairs, matching.iou, matching.edge_error,
                                           matching.same_label):
            if max(old.scores[i], new.scores[j]) < SHOWN:
                continue
            shift = float(new.scores[j]) - float(old.scores[i])
            self.iou.append(float(iou))
            self.score_shift.append(abs(shift))
            self.edge_px.append(float(edge))
            self.label_changes += not same
            kind = "relabelled" if not same else "moved" if self._beyond(
                float(iou), abs(shift), float(edge)) else None
            if kind is not None:
                self.changes.append(self._change(image, kind, before[i], after[j],
                                                 (float(iou), shift, float(edge))))

    def _beyond(self, iou: float, shift: float, edge: float) -> bool:
        limits = self.limits
        return (iou < limits.min_iou or shift > limits.max_score_shift
                or edge > limits.max_edge_px)

    def _change(self, image: str, kind: str, before: DetectionRow | None,
                after: DetectionRow | None,
                figures: tuple[float, float, float] | None = None) -> Change:
        iou, shift, edge = (round(v, 6) for v in figures) if figures else (None, None, None)
        return Change(stage=self.stage, image=image, kind=kind, before=before, after=after,
                      iou=iou, score_shift=shift, edge_px=edge)

    def figures(self) -> StageDrift:
        return StageDrift(
            images=self.images, not_compared=self.not_compared, before=self.before,
            after=self.after, matched=len(self.iou), new=self.new, lost=self.lost,
            label_changes=self.label_changes, min_iou=min(self.iou, default=1.0),
            max_score_shift=round(max(self.score_shift, default=0.0), 6),
            max_edge_px=round(max(self.edge_px, default=0.0), 4))


def _why_not_compared(name: str, current: Report, baseline: Report) -> str | None:
    """Why stage `name` of the current run has no drift figures (None: it has)."""
    mine = next(row for row in current.stages if row.name == name)
    theirs = next((row for row in baseline.stages if row.name == name), None)
    if not mine.ran:
        return f"skipped in this run: {mine.reason or 'not run'}"
    if theirs is None:
        return "not a stage of the baseline"
    if not theirs.ran:
        return f"skipped in the baseline: {theirs.reason or 'not run'}"
    return None


def changed_versions(before: dict[str, Any], after: dict[str, Any]
                     ) -> dict[str, tuple[str | None, str | None]]:
    """The tool and library versions that differ between two reports' `tool` entries."""
    def flat(tool: dict[str, Any]) -> dict[str, Any]:
        libraries = tool.get("libraries") if isinstance(tool.get("libraries"), dict) else {}
        return {**{k: v for k, v in tool.items() if k != "libraries"}, **libraries}

    old, new = flat(before), flat(after)
    return {name: (_text(old.get(name)), _text(new.get(name)))
            for name in [*old, *(n for n in new if n not in old)]
            if old.get(name) != new.get(name)}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def compare_reports(baseline: Report, current: Report, tolerances: Tolerances,
                    names: tuple[str, str], where: Path | str, subset: bool = False) -> Drift:
    """The drift from `baseline` to `current` for each stage of `current`'s table.

    `names` are the two sides' report names; `where` is the baseline file that
    bad input errors name; `subset` lets `current` hold only some of the
    baseline's frames (a shard)."""
    pairs = paired_records(baseline, current, where, subset)
    stages: dict[str, StageDrift] = {}
    not_compared: dict[str, str] = {}
    changes: list[Change] = []
    for row in current.stages:
        reason = _why_not_compared(row.name, current, baseline)
        if reason is not None:
            not_compared[row.name] = reason
            continue
        tally = _StageTally(row.name, tolerances.limits(row.name).baseline)
        for old, new in pairs:
            before, after = old.stages.get(row.name), new.stages.get(row.name)
            if isinstance(before, StageResult) and isinstance(after, StageResult):
                tally.add(new.image, before.detections, after.detections)
            else:
                tally.not_compared += 1
        stages[row.name] = tally.figures()
        changes += tally.changes
    current_names = {row.name for row in current.stages}
    for row in baseline.stages:
        if row.name not in current_names:
            not_compared[row.name] = "only a stage of the baseline"
    return Drift(baseline=run_side(baseline, names[0]), current=run_side(current, names[1]),
                 same_checkpoint=baseline.checkpoint.sha256 == current.checkpoint.sha256,
                 changed_versions=changed_versions(baseline.tool, current.tool),
                 stages=stages, not_compared=not_compared, changes=changes)


def with_baseline(report: Report, baseline: Report, baseline_path: Path) -> Report:
    """`report` compared with `baseline` (read from `baseline_path`): its drift, and a
    gate holding the baseline checks beside the parity checks."""
    drift = compare_reports(baseline, report, report.tolerances,
                            (baseline_path.name, THIS_RUN), baseline_path,
                            subset=report.images.shard is not None)
    return replace(report, baseline=drift,
                   gate=evaluate(report.summary, report.tolerances, report.stages, drift))



def merge_baseline(merged: Report, shards: list[tuple[Path, Report]], baseline_path: Path | None
                   ) -> Report:
    """The merged report compared with the baseline `parity merge --baseline` names; shards
    checked against a baseline need one (their comparisons cover only their frames)."""
    if baseline_path is None:
        compared = next((path for path, shard in shards if shard.baseline is not None), None)
        if compared is not None:
            raise InputError(compared, "was checked against a baseline: give `parity merge "
                             "--baseline` the same report to compare the merged run with it")
        return merged
    return with_baseline(merged, read_report(baseline_path), baseline_path)


def diff_reports(before: tuple[Path, Report], after: tuple[Path, Report],
                 tolerances: Tolerances) -> DiffDocument:
    """`parity diff A B`: the drift from report A to report B on the same frames, gated
    by `tolerances`' [baseline] limits, in B's stage order."""
    (path_a, report_a), (path_b, report_b) = before, after
    drift = compare_reports(report_a, report_b, tolerances, (path_a.name, path_b.name), path_a)
    checks = [check for row in report_b.stages
              for check in baseline_checks(row.name, drift, tolerances)]
    return DiffDocument(schema=DIFF_SCHEMA, schema_version=DIFF_SCHEMA_VERSION,
                        tolerances=tolerances, drift=drift,
                        gate=verdict(checks, report_b.stages))
