"""Tolerances as types: the limits of each section, per-stage overrides, and their checks.

Sections and keys are those of parity/data/tolerances.toml; `check_tolerance_data`
checks TOML or report data and names the key path of the first problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from parity.report_codec import ABSENT, WholeProblem

# limits that are fractions (or cosines, IoUs, AP) and so lie in [0, 1]; the others are
# finite and >= 0
FRACTIONS = frozenset({"min_matched_fraction", "min_iou", "min_ap50", "min_cosine",
                       "min_argmax_agreement", "min_identical_fraction"})


@dataclass(frozen=True, kw_only=True)
class DetectionLimits:
    """Each stage against the reference, on the firmware band (score >= 0.4)."""

    min_matched_fraction: float
    max_extra: float
    min_iou: float
    max_score_diff: float
    max_edge_px: float
    max_label_changes: float
    min_ap50: float


@dataclass(frozen=True, kw_only=True)
class TensorLimits:
    """Each stage against its tensor predecessor, per output blob."""

    max_abs: float
    min_cosine: float
    min_argmax_agreement: float


@dataclass(frozen=True, kw_only=True)
class InputLimits:
    """What each stage was fed."""

    min_identical_fraction: float
    max_device_input_diff: float


@dataclass(frozen=True, kw_only=True)
class BaselineLimits:
    """Each stage against the same stage of a baseline report (`--baseline`, `parity diff`),
    on detections either side shows (score >= 0.4)."""

    max_new: float
    max_lost: float
    min_iou: float
    max_score_shift: float
    max_edge_px: float
    max_label_changes: float


SECTION_TYPES = {"detections": DetectionLimits, "tensors": TensorLimits, "inputs": InputLimits,
                 "baseline": BaselineLimits}


class ToleranceProblem(Exception):
    """A tolerance key or value that is wrong; the message names its key path."""


def _check_limit(key: str, value: Any, where: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ToleranceProblem(f"{where}{key} must be a number")
    if key in FRACTIONS and not 0 <= value <= 1:
        raise ToleranceProblem(f"{where}{key} = {value}: must lie in [0, 1]")
    if not (math.isfinite(value) and value >= 0):
        raise ToleranceProblem(f"{where}{key} = {value}: must be finite and >= 0")


def _section_keys(section: str) -> list[str]:
    return list(SECTION_TYPES[section].__dataclass_fields__)


def check_section(given: Any, section: str, where: str, complete: bool) -> None:
    """Keys of one section (`where` ends with its path and a dot), limits in range."""
    if not isinstance(given, dict):
        raise ToleranceProblem(f"{where[:-1]} must be a table")
    allowed = _section_keys(section)
    for key, value in given.items():
        if key not in allowed:
            raise ToleranceProblem(f"unknown key {where}{key}")
        _check_limit(key, value, where)
    lacking = [key for key in allowed if key not in given] if complete else []
    if lacking:
        raise ToleranceProblem(f"{where}{lacking[0]} missing")


def check_tolerance_data(given: Any, where: str, stage_names: list[str] | None,
                         complete: bool) -> None:
    """Tolerances as TOML or a report holds them: sections, stage overrides (for
    `stage_names`; any with None), limits in range; every key with `complete`."""
    if not isinstance(given, dict):
        raise ToleranceProblem(f"{where[:-1]} must be an object")
    for key, value in given.items():
        if key == "stages":
            _check_stages(value, f"{where}stages.", stage_names)
        elif key in SECTION_TYPES:
            check_section(value, key, f"{where}{key}.", complete)
        else:
            raise ToleranceProblem(f"unknown key {where}{key}")
    lacking = [key for key in SECTION_TYPES if key not in given] if complete else []
    if lacking:
        raise ToleranceProblem(f"{where}{lacking[0]} missing")


def _check_stages(stages: Any, where: str, stage_names: list[str] | None) -> None:
    if not isinstance(stages, dict):
        raise ToleranceProblem(f"{where[:-1]} must be a table")
    for stage, sections in stages.items():
        if stage_names is not None and stage not in stage_names:
            raise ToleranceProblem(f"unknown key {where}{stage}")
        if not isinstance(sections, dict):
            raise ToleranceProblem(f"{where}{stage} must be a table")
        for section, values in sections.items():
            if section not in SECTION_TYPES:
                raise ToleranceProblem(f"unknown key {where}{stage}.{section}")
            check_section(values, section, f"{where}{stage}.{section}.", complete=False)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The limits that apply to one stage."""

    detections: DetectionLimits
    tensors: TensorLimits
    inputs: InputLimits
    baseline: BaselineLimits


@dataclass(frozen=True, kw_only=True)
class Tolerances:
    """Limits for every stage, and per-stage overrides of some of them."""

    detections: DetectionLimits
    tensors: TensorLimits
    inputs: InputLimits
    baseline: BaselineLimits
    stages: dict[str, dict[str, dict[str, float]]] = field(default=None, metadata=ABSENT)  # stage -> section -> key

    @classmethod
    def from_json(cls, value: Any, at: str) -> Tolerances:
        """Complete tolerances (every section and key, limits in range); stage names are
        checked by the report, against its stage table."""
        try:
            check_tolerance_data(value, f"{at}." if at else "", None, complete=True)
        except ToleranceProblem as exc:
            raise WholeProblem(at, str(exc)) from None
        return cls.from_checked(value)

    @classmethod
    def from_checked(cls, data: dict[str, Any]) -> Tolerances:
        """From checked data (check_tolerance_data, complete)."""
        sections = {name: kind(**data[name]) for name, kind in SECTION_TYPES.items()}
        stages = data.get("stages")
        return cls(**sections, stages={s: {k: dict(v) for k, v in sections_.items()}
                                       for s, sections_ in stages.items()}
                   if stages is not None else None)

    def limits(self, stage: str) -> Limits:
        """The limits of `stage`: its overrides over the common sections."""
        overrides = (self.stages or {}).get(stage, {})
        merged = {}
        for name, kind in SECTION_TYPES.items():
            common = getattr(self, name).__dict__
            merged[name] = kind(**{**common, **overrides.get(name, {})})
        return Limits(**merged)
