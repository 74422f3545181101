"""Tolerances from TOML and the pass/fail verdict, blamed on the first failing stage."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from common.errors import InputError
from parity.report_types import Check, Gate, StageFigures, StageRow, TensorFigures
from parity.stage_registry import DEVICE_INPUT
from parity.tolerance_types import (
    FRACTIONS,
    SECTION_TYPES,
    Limits,
    ToleranceProblem,
    Tolerances,
    check_tolerance_data,
)

__all__ = ["FRACTIONS", "PROFILES", "default_tolerances", "evaluate", "load_tolerances",
           "read_tolerances", "stage_checks"]

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


def _tensor_checks(stage: str, figures: StageFigures, limits: Limits) -> list[Check]:
    ten, checks = limits.tensors, []
    for blob, t in figures.tensors.items():
        if not isinstance(t, TensorFigures):
            checks.append(Check(stage=stage, check=f"tensors.{blob}.shape",
                                value=t.shape_mismatch, limit="same shape", passed=False))
            continue
        checks += [_at_most(stage, f"tensors.{blob}.max_abs", t.max_abs, ten.max_abs),
                   _at_least(stage, f"tensors.{blob}.cosine", t.cosine, ten.min_cosine)]
        if t.argmax_agreement is not None:
            checks.append(_at_least(stage, f"tensors.{blob}.argmax_agreement",
                                    t.argmax_agreement, ten.min_argmax_agreement))
    return checks


def stage_checks(row: StageRow, figures: StageFigures, tolerances: Tolerances) -> list[Check]:
    """The checks of one stage of the stage table, from its summary figures."""
    stage = row.name
    checks = [_at_most(stage, "errors", figures.errors, 0)]
    if row.reference:
        return checks
    limits = tolerances.limits(stage)
    checks += _detection_checks(stage, figures, limits) + _tensor_checks(stage, figures, limits)
    if DEVICE_INPUT in row.checks:
        checks.append(_at_most(stage, "inputs.device_input_diff",
                               figures.input_max_diff if figures.input_max_diff is not None
                               else 0.0, limits.inputs.max_device_input_diff))
    else:
        checks.append(_at_least(stage, "inputs.identical_fraction",
                                figures.identical_input_fraction,
                                limits.inputs.min_identical_fraction))
    return checks


def evaluate(summary: dict[str, StageFigures], tolerances: Tolerances,
             stages: list[StageRow]) -> Gate:
    """All checks of the stages of the stage table that ran, the verdict, and the first
    failing stage in the table's (pipeline) order."""
    rows = [row for row in stages if row.name in summary]
    checks = [c for row in rows for c in stage_checks(row, summary[row.name], tolerances)]
    failing = {c.stage for c in checks if not c.passed}
    in_order = [row.name for row in rows if row.name in failing]
    return Gate(passed=not failing, blamed_stage=in_order[0] if in_order else None,
                failing_stages=in_order, checks=checks)
