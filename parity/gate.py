"""Tolerances from TOML and the pass/fail verdict, blamed on the first failing stage."""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from common.errors import InputError
from parity.stages import STAGE_ORDER

SECTIONS = ("detections", "tensors", "inputs")


def default_tolerances() -> dict[str, Any]:
    text = (resources.files("parity") / "data" / "tolerances.toml").read_text()
    return tomllib.loads(text)


# limits that are fractions (or cosines, IoUs, AP) and so lie in [0, 1]; the others are
# finite and >= 0
FRACTIONS = frozenset({"min_matched_fraction", "min_iou", "min_ap50", "min_cosine",
                       "min_argmax_agreement", "min_identical_fraction"})


def _check_limit(path: Path, key: str, value: Any, where: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InputError(path, f"{where}{key} must be a number")
    if key in FRACTIONS and not 0 <= value <= 1:
        raise InputError(path, f"{where}{key} = {value}: must lie in [0, 1]")
    if not (math.isfinite(value) and value >= 0):
        raise InputError(path, f"{where}{key} = {value}: must be finite and >= 0")


def _check_keys(path: Path, given: dict, allowed: dict, where: str,
                complete: bool = False) -> None:
    """Keys of `given` are keys of `allowed` (all of them with `complete`), limits in range."""
    for key, value in given.items():
        if key not in allowed:
            raise InputError(path, f"unknown key {where}{key}")
        if isinstance(allowed[key], dict):
            if not isinstance(value, dict):
                raise InputError(path, f"{where}{key} must be a table")
            _check_keys(path, value, allowed[key], f"{where}{key}.", complete and key != "stages")
        else:
            _check_limit(path, key, value, where)
    if complete:
        lacking = [key for key in allowed if key != "stages" and key not in given]
        if lacking:
            raise InputError(path, f"{where}{lacking[0]} missing")


def _allowed_keys(tolerances: dict[str, Any]) -> dict[str, Any]:
    sections = {section: tolerances[section] for section in SECTIONS}
    return {**sections, "stages": {stage: sections for stage in STAGE_ORDER}}


def check_tolerances(where: str | Path, tolerances: Any, key: str = "tolerances") -> None:
    """Complete tolerances as a report holds them (every section and key, ranges)."""
    if not isinstance(tolerances, dict):
        raise InputError(where, f"{key} must be an object")
    _check_keys(Path(where), tolerances, _allowed_keys(default_tolerances()), f"{key}.",
                complete=True)


def load_tolerances(path: Path | None) -> dict[str, Any]:
    """Defaults, overridden by `path`; unknown keys and out-of-range limits are an error."""
    tolerances = default_tolerances()
    if path is None:
        return tolerances
    try:
        given = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such tolerance file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read tolerance file: {exc}") from None
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None
    _check_keys(path, given, _allowed_keys(tolerances), "")
    merged = copy.deepcopy(tolerances)
    for section in SECTIONS:
        merged[section].update(given.get(section, {}))
    for stage, sections in given.get("stages", {}).items():
        for section, values in sections.items():
            merged.setdefault("stages", {}).setdefault(stage, {}).setdefault(section, {})
            merged["stages"][stage][section].update(values)
    return merged


def limits_for(tolerances: dict[str, Any], stage: str, section: str) -> dict[str, float]:
    return {**tolerances[section], **tolerances.get("stages", {}).get(stage, {}).get(section, {})}


@dataclass(frozen=True)
class Check:
    stage: str
    check: str
    value: float | str
    limit: float | str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _at_least(stage: str, name: str, value: float, limit: float) -> Check:
    return Check(stage, name, value, limit, value >= limit)


def _at_most(stage: str, name: str, value: float, limit: float) -> Check:
    return Check(stage, name, value, limit, value <= limit)


def stage_checks(stage: str, figures: dict[str, Any], tolerances: dict[str, Any]) -> list[Check]:
    checks = [_at_most(stage, "errors", figures["errors"], 0)]
    if stage == "torch":
        return checks
    det = limits_for(tolerances, stage, "detections")
    band = figures["detections"]["bands"]["firmware"]
    checks += [
        _at_least(stage, "detections.matched_fraction", band["matched_fraction"],
                  det["min_matched_fraction"]),
        _at_most(stage, "detections.extra", band["extra"], det["max_extra"]),
        _at_least(stage, "detections.min_iou", band["min_iou"], det["min_iou"]),
        _at_most(stage, "detections.max_score_diff", band["max_score_diff"],
                 det["max_score_diff"]),
        _at_most(stage, "detections.max_edge_px", band["max_edge_px"], det["max_edge_px"]),
        _at_most(stage, "detections.label_changes", band["label_changes"],
                 det["max_label_changes"]),
        _at_least(stage, "detections.ap50", figures["detections"]["ap50"], det["min_ap50"]),
    ]
    ten = limits_for(tolerances, stage, "tensors")
    for blob, t in figures["tensors"].items():
        if "shape_mismatch" in t:
            checks.append(Check(stage, f"tensors.{blob}.shape", t["shape_mismatch"],
                                "same shape", False))
            continue
        checks += [_at_most(stage, f"tensors.{blob}.max_abs", t["max_abs"], ten["max_abs"]),
                   _at_least(stage, f"tensors.{blob}.cosine", t["cosine"], ten["min_cosine"])]
        if "argmax_agreement" in t:
            checks.append(_at_least(stage, f"tensors.{blob}.argmax_agreement",
                                    t["argmax_agreement"], ten["min_argmax_agreement"]))
    inputs = limits_for(tolerances, stage, "inputs")
    if stage == "device":
        checks.append(_at_most(stage, "inputs.device_input_diff",
                               figures.get("input_max_diff", 0.0),
                               inputs["max_device_input_diff"]))
    else:
        checks.append(_at_least(stage, "inputs.identical_fraction",
                                figures["identical_input_fraction"],
                                inputs["min_identical_fraction"]))
    return checks


def evaluate(summary: dict[str, Any], tolerances: dict[str, Any]) -> dict[str, Any]:
    """All checks, the verdict, and the first failing stage in pipeline order."""
    checks = [c for stage in STAGE_ORDER if stage in summary
              for c in stage_checks(stage, summary[stage], tolerances)]
    failing = [c.stage for c in checks if not c.passed]
    blamed = next((s for s in STAGE_ORDER if s in failing), None)
    return {"passed": not failing, "blamed_stage": blamed,
            "failing_stages": [s for s in STAGE_ORDER if s in failing],
            "checks": [c.to_dict() for c in checks]}
