"""Tolerances from TOML and the pass/fail verdict, blamed on the first failing stage."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from common.errors import InputError
from parity.layouts import Layout
from parity.report_types import (
    Check,
    Drift,
    Gate,
    ShapeMismatchFigures,
    StageFigures,
    StageRow,
    TensorFigures,
)
from parity.stage_registry import DEVICE_INPUT
from parity.tensor_stats import ARGMAX_MIN_SCORE
from parity.tolerance_types import (
    FRACTIONS,
    SECTION_TYPES,
    Limits,
    ToleranceProblem,
    Tolerances,
    check_tolerance_data,
)

__all__ = ["FRACTIONS", "PROFILES", "baseline_checks", "compared_blobs", "default_tolerances",
           "evaluate", "load_tolerances", "read_tolerances", "stage_check_limits",
           "stage_checks", "verdict"]

PROFILES = "profiles"  # [profiles.<name>]: the same keys again, applied with --profile <name>


def _default_document() -> dict[str, Any]:
    text = (resources.files("parity") / "data" / "tolerances.toml").read_text()
    return tomllib.loads(text)


def default_tolerances() -> dict[str, Any]:
    """The shipped tolerances, without any profile (as TOML data)."""
    return {key: value for key, value in _default_document().items() if key != PROFILES}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such tolerance file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read tolerance file: {exc}") from None
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None


def _checked(path: Path | str, given: Any, where: str, stage_names: list[str]) -> None:
    try:
        check_tolerance_data(given, where, stage_names, complete=False)
    except ToleranceProblem as exc:
        raise InputError(path, str(exc)) from None


def _profiles_of(path: Path | str, document: dict[str, Any], stage_names: list[str]
                 ) -> dict[str, dict[str, Any]]:
    """The [profiles.<name>] tables of a tolerance document, each checked like the top."""
    profiles = document.get(PROFILES, {})
    if not isinstance(profiles, dict):
        raise InputError(path, f"{PROFILES} must be a table")
    for name, profile in profiles.items():
        if not isinstance(profile, dict):
            raise InputError(path, f"{PROFILES}.{name} must be a table")
        _checked(path, profile, f"{PROFILES}.{name}.", stage_names)
    return profiles


def _overlay(merged: dict[str, Any], given: dict[str, Any]) -> None:
    """Checked keys of `given` (top-level form) over `merged`, in place."""
    for section in SECTION_TYPES:
        merged[section].update(given.get(section, {}))
    for stage, sections in given.get("stages", {}).items():
        for section, values in sections.items():
            merged.setdefault("stages", {}).setdefault(stage, {}).setdefault(section, {})
            merged["stages"][stage][section].update(values)


def load_tolerances(path: Path | None, profile: str | None = None,
                    stage_names: Iterable[str] | None = None) -> dict[str, Any]:
    """Defaults, then the profile's keys, then `path`'s (then its own profile's), as data.

    Unknown keys, stages other than `stage_names` (default: the registered ones),
    unknown profiles and out-of-range limits are an error."""
    if stage_names is None:
        from parity.stages import STAGES

        stage_names = STAGES.names()
    names = list(stage_names)
    defaults = default_tolerances()
    shipped = _profiles_of("tolerances.toml", _default_document(), names)
    given = _read_toml(path) if path is not None else {}
    own: dict[str, dict[str, Any]] = {}
    if path is not None:
        _checked(path, {k: v for k, v in given.items() if k != PROFILES}, "", names)
        own = _profiles_of(path, given, names)
    if profile is not None and profile not in shipped and profile not in own:
        raise InputError("--profile", f"no profile {profile!r} (known: "
                         f"{', '.join(sorted({*shipped, *own})) or 'none'})")
    merged = copy.deepcopy(defaults)
    if profile is not None:
        _overlay(merged, shipped.get(profile, {}))
    _overlay(merged, given)
    if profile is not None:
        _overlay(merged, own.get(profile, {}))
    return merged


def read_tolerances(path: Path | None, profile: str | None = None,
                    stage_names: Iterable[str] | None = None) -> Tolerances:
    """`load_tolerances` as the typed Tolerances the gate applies."""
    return Tolerances.from_checked(load_tolerances(path, profile, stage_names))


def _at_least(stage: str, name: str, value: float, limit: float) -> Check:
    return Check(stage=stage, check=name, value=value, limit=limit, passed=value >= limit)


def _at_most(stage: str, name: str, value: float, limit: float) -> Check:
    return Check(stage=stage, check=name, value=value, limit=limit, passed=value <= limit)


def _skipped(stage: str, name: str, limit: float | str, reason: str) -> Check:
    return Check(stage=stage, check=name, value=None, limit=limit, passed=True, skipped=reason)


def _detection_limits(limits: Limits) -> list[tuple[str, float]]:
    """(check, limit) of the detection checks, in gate order."""
    det = limits.detections
    return [("detections.matched_fraction", det.min_matched_fraction),
            ("detections.extra", det.max_extra), ("detections.min_iou", det.min_iou),
            ("detections.max_score_diff", det.max_score_diff),
            ("detections.max_edge_px", det.max_edge_px),
            ("detections.label_changes", det.max_label_changes),
            ("detections.ap50", det.min_ap50)]


def _detection_checks(stage: str, figures: StageFigures, limits: Limits) -> list[Check]:
    det = limits.detections
    band = figures.detections.bands["firmware"]
    return [
        _at_least(stage, "detections.matched_fraction", band.matched_fraction,
                  det.min_matched_fraction),
        _at_most(stage, "detections.extra", band.extra, det.max_extra),
        _at_least(stage, "detections.min_iou", band.min_iou, det.min_iou),
        _at_most(stage, "detections.max_score_diff", band.max_score_diff, det.max_score_diff),
        _at_most(stage, "detections.max_edge_px", band.max_edge_px, det.max_edge_px),
        _at_most(stage, "detections.label_changes", band.label_changes,
                 det.max_label_changes),
        _at_least(stage, "detections.ap50", figures.detections.ap50, det.min_ap50),
    ]


def _blob_limits(row: StageRow, blob: str, position: int, limits: Limits
                 ) -> list[tuple[str, float]]:
    """(check, limit) of one blob's checks; argmax agreement for class blobs only."""
    ten = limits.tensors
    checks = [(f"tensors.{blob}.max_abs", ten.max_abs), (f"tensors.{blob}.cosine", ten.min_cosine)]
    if Layout(row.layout).is_class_blob(position):
        checks.append((f"tensors.{blob}.argmax_agreement", ten.min_argmax_agreement))
    return checks


def _blob_checks(stage: str, blob: str, t: TensorFigures | ShapeMismatchFigures,
                 named: list[tuple[str, float]]) -> list[Check]:
    """The checks of one compared blob: a shape mismatch fails each of them."""
    if not isinstance(t, TensorFigures):
        value = f"shape {t.shape_mismatch}"
        return [Check(stage=stage, check=name, value=value, limit=limit, passed=False)
                for name, limit in named]
    checks = [_at_most(stage, named[0][0], t.max_abs, named[0][1]),
              _at_least(stage, named[1][0], t.cosine, named[1][1])]
    if len(named) > 2:
        checks.append(_at_least(stage, named[2][0], t.argmax_agreement, named[2][1])
                      if t.argmax_agreement is not None else
                      _skipped(stage, named[2][0], named[2][1], "no cell of the earlier stage "
                               f"scored >= {ARGMAX_MIN_SCORE} on any image"))
    return checks


def compared_blobs(summary: dict[str, StageFigures], stages: list[StageRow]
                   ) -> dict[str, list[str]]:
    """Per layout, the blobs any stage of that layout compared, in output order."""
    blobs: dict[str, list[str]] = {}
    for row in stages:
        names = blobs.setdefault(row.layout, [])
        for blob in summary[row.name].tensors if row.name in summary else ():
            if blob not in names:
                names.append(blob)
    return blobs


def _compares_tensors(row: StageRow, stages: list[StageRow]) -> bool:
    """Whether the stage has an earlier stage of its own layout to compare tensors with."""
    return any(s.name in row.compared_with and s.layout == row.layout for s in stages)


def _input_limit(row: StageRow, limits: Limits) -> tuple[str, float]:
    if DEVICE_INPUT in row.checks:
        return "inputs.device_input_diff", limits.inputs.max_device_input_diff
    return "inputs.identical_fraction", limits.inputs.min_identical_fraction


def _why_not_computed(row: StageRow, figures: StageFigures | None) -> str | None:
    """Why a stage's figures cannot be checked (None: they can)."""
    if figures is None or not row.ran:
        return f"stage skipped: {row.reason or 'not run'}"
    if figures.errors >= figures.images:
        return f"not computed: the stage failed on every image ({figures.errors})"
    return None


def stage_check_limits(row: StageRow, stages: list[StageRow], blobs: dict[str, list[str]],
                       tolerances: Tolerances) -> list[tuple[str, float]]:
    """(check, limit) of every check of a stage: fixed by its descriptor (the stage table),
    the compared blobs of its layout and the tolerances, whatever the run did."""
    checks: list[tuple[str, float]] = [("errors", 0)]
    if row.reference:
        return checks
    limits = tolerances.limits(row.name)
    checks += _detection_limits(limits)
    if _compares_tensors(row, stages):
        for position, blob in enumerate(blobs.get(row.layout, [])):
            checks += _blob_limits(row, blob, position, limits)
    return checks + [_input_limit(row, limits)]


def stage_checks(row: StageRow, figures: StageFigures | None, tolerances: Tolerances,
                 stages: list[StageRow] | None = None,
                 blobs: dict[str, list[str]] | None = None) -> list[Check]:
    """Every check of one stage of the stage table; those its figures (None: the stage did
    not run) cannot answer are skipped with the reason."""
    stages = stages if stages is not None else [row]
    if blobs is None:
        blobs = compared_blobs({row.name: figures} if figures else {}, stages)
    named = stage_check_limits(row, stages, blobs, tolerances)
    stage = row.name
    if figures is None or not row.ran:
        reason = _why_not_computed(row, None)
        return [_skipped(stage, name, limit, reason) for name, limit in named]
    checks = [_at_most(stage, "errors", figures.errors, 0)]
    reason = _why_not_computed(row, figures)
    if row.reference:
        return checks
    if reason is not None:
        return checks + [_skipped(stage, name, limit, reason) for name, limit in named[1:]]
    limits = tolerances.limits(stage)
    checks += _detection_checks(stage, figures, limits)
    if _compares_tensors(row, stages):
        for position, blob in enumerate(blobs.get(row.layout, [])):
            in_blob = _blob_limits(row, blob, position, limits)
            t = figures.tensors.get(blob)
            checks += _blob_checks(stage, blob, t, in_blob) if t is not None else [
                _skipped(stage, name, limit, "not compared: no earlier stage of its layout ("
                         f"{', '.join(row.compared_with)}) ran on the same image")
                for name, limit in in_blob]
    return checks + [_input_check(row, figures, limits)]


def _input_check(row: StageRow, figures: StageFigures, limits: Limits) -> Check:
    name, limit = _input_limit(row, limits)
    if DEVICE_INPUT in row.checks:
        diff = figures.input_max_diff if figures.input_max_diff is not None else 0.0
        return _at_most(row.name, name, diff, limit)
    return _at_least(row.name, name, figures.identical_input_fraction, limit)


def baseline_checks(stage: str, drift: Drift, tolerances: Tolerances) -> list[Check]:
    """The checks of a stage against the baseline: the same names whatever happened,
    skipped with the reason when the stage was not compared."""
    limits = tolerances.limits(stage).baseline
    named = [("baseline.new", limits.max_new), ("baseline.lost", limits.max_lost),
             ("baseline.min_iou", limits.min_iou),
             ("baseline.max_score_shift", limits.max_score_shift),
             ("baseline.max_edge_px", limits.max_edge_px),
             ("baseline.label_changes", limits.max_label_changes)]
    figures = drift.stages.get(stage)
    reason = drift.not_compared.get(stage, "not compared")
    if figures is not None and not figures.images:
        reason = f"not compared: the stage failed on every image in one of the runs " \
                 f"({figures.not_compared})"
    if figures is None or not figures.images:
        return [_skipped(stage, name, limit, reason) for name, limit in named]
    values = [figures.new, figures.lost, figures.min_iou, figures.max_score_shift,
              figures.max_edge_px, figures.label_changes]
    return [(_at_least if name == "baseline.min_iou" else _at_most)(stage, name, value, limit)
            for (name, limit), value in zip(named, values)]


def verdict(checks: list[Check], stages: list[StageRow]) -> Gate:
    """The gate of `checks`: passed, and the failing stages in the table's order."""
    failing = {c.stage for c in checks if not c.passed}
    in_order = [row.name for row in stages if row.name in failing]
    return Gate(passed=not failing, blamed_stage=in_order[0] if in_order else None,
                failing_stages=in_order, checks=checks)


def evaluate(summary: dict[str, StageFigures], tolerances: Tolerances,
             stages: list[StageRow], drift: Drift | None = None) -> Gate:
    """Every check of every stage of the stage table (skipped where it cannot be computed,
    e.g. a stage that did not run), each followed by its baseline checks when there is
    a `drift`; the verdict, and the first failing stage in the table's (pipeline) order."""
    blobs = compared_blobs(summary, stages)
    checks = []
    for row in stages:
        checks += stage_checks(row, summary.get(row.name), tolerances, stages, blobs)
        if drift is not None:
            checks += baseline_checks(row.name, drift, tolerances)
    return verdict(checks, stages)

