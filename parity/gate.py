"""Tolerances from TOML and the pass/fail verdict, blamed on the first failing stage."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from common.errors import InputError
from parity.stage_registry import DEVICE_INPUT

SECTIONS = ("detections", "tensors", "inputs")
PROFILES = "profiles"  # [profiles.<name>]: the same keys again, applied with --profile <name>


def _default_document() -> dict[str, Any]:
    text = (resources.files("parity") / "data" / "tolerances.toml").read_text()
    return tomllib.loads(text)


def default_tolerances() -> dict[str, Any]:
    """The shipped tolerances, without any profile."""
    return {key: value for key, value in _default_document().items() if key != PROFILES}


def profile_names() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(_default_document().get(PROFILES, {}))


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


def _allowed_keys(tolerances: dict[str, Any], stage_names: Iterable[str]) -> dict[str, Any]:
    sections = {section: tolerances[section] for section in SECTIONS}
    return {**sections, "stages": {stage: sections for stage in stage_names}}


def check_tolerances(where: str | Path, tolerances: Any, stage_names: Iterable[str],
                     key: str = "tolerances") -> None:
    """Complete tolerances as a report holds them (every section and key, ranges); stage
    overrides only for `stage_names` (the report's stage table)."""
    if not isinstance(tolerances, dict):
        raise InputError(where, f"{key} must be an object")
    _check_keys(Path(where), tolerances, _allowed_keys(default_tolerances(), stage_names),
                f"{key}.", complete=True)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such tolerance file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read tolerance file: {exc}") from None
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None


def _profiles_of(path: Path, document: dict[str, Any], allowed: dict[str, Any]
                 ) -> dict[str, dict[str, Any]]:
    """The [profiles.<name>] tables of a tolerance document, each checked like the top."""
    profiles = document.get(PROFILES, {})
    if not isinstance(profiles, dict):
        raise InputError(path, f"{PROFILES} must be a table")
    for name, profile in profiles.items():
        if not isinstance(profile, dict):
            raise InputError(path, f"{PROFILES}.{name} must be a table")
        _check_keys(path, profile, allowed, f"{PROFILES}.{name}.")
    return profiles


def _overlay(merged: dict[str, Any], given: dict[str, Any]) -> None:
    """Checked keys of `given` (top-level form) over `merged`, in place."""
    for section in SECTIONS:
        merged[section].update(given.get(section, {}))
    for stage, sections in given.get("stages", {}).items():
        for section, values in sections.items():
            merged.setdefault("stages", {}).setdefault(stage, {}).setdefault(section, {})
            merged["stages"][stage][section].update(values)


def load_tolerances(path: Path | None, profile: str | None = None,
                    stage_names: Iterable[str] | None = None) -> dict[str, Any]:
    """Defaults, then the profile's keys, then `path`'s (then its own profile's).

    Unknown keys, stages other than `stage_names` (default: the registered ones),
    unknown profiles and out-of-range limits are an error."""
    if stage_names is None:
        from parity.stages import STAGES

        stage_names = STAGES.names()
    document = _default_document()
    defaults = {key: value for key, value in document.items() if key != PROFILES}
    allowed = _allowed_keys(defaults, stage_names)
    shipped = _profiles_of(Path("tolerances.toml"), document, allowed)
    given = _read_toml(path) if path is not None else {}
    _check_keys(path or Path(), {k: v for k, v in given.items() if k != PROFILES}, allowed, "")
    own = _profiles_of(path, given, allowed) if path is not None else {}
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


def stage_checks(row: dict[str, Any], figures: dict[str, Any],
                 tolerances: dict[str, Any]) -> list[Check]:
    """The checks of one stage of the stage table, from its summary figures."""
    stage = row["name"]
    checks = [_at_most(stage, "errors", figures["errors"], 0)]
    if row["reference"]:
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
    if DEVICE_INPUT in row["checks"]:
        checks.append(_at_most(stage, "inputs.device_input_diff",
                               figures.get("input_max_diff", 0.0),
                               inputs["max_device_input_diff"]))
    else:
        checks.append(_at_least(stage, "inputs.identical_fraction",
                                figures["identical_input_fraction"],
                                inputs["min_identical_fraction"]))
    return checks


def evaluate(summary: dict[str, Any], tolerances: dict[str, Any],
             stages: list[dict[str, Any]]) -> dict[str, Any]:
    """All checks of the stages of the stage table that ran, the verdict, and the first
    failing stage in the table's (pipeline) order."""
    rows = [row for row in stages if row["name"] in summary]
    checks = [c for row in rows for c in stage_checks(row, summary[row["name"]], tolerances)]
    failing = {c.stage for c in checks if not c.passed}
    in_order = [row["name"] for row in rows if row["name"] in failing]
    return {"passed": not failing, "blamed_stage": in_order[0] if in_order else None,
            "failing_stages": in_order, "checks": [c.to_dict() for c in checks]}
