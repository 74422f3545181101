"""The parity report: a versioned JSON document, and its JUnit and terminal forms.

Schema `nanodet-unitv2/parity-report`, version 1 (documented in README):
tool, checkpoint, model_folder, images, stages, tolerances, records (per
image), summary (per stage, computed from records), gate (checks, verdict,
blamed stage) and, with --blame, blame.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
from rich.console import Console
from rich.table import Table

from heads.errors import InputError
from parity.gate import evaluate
from parity.model_folder import read_json_object
from parity.summary import summarize

SCHEMA = "nanodet-unitv2/parity-report"
SCHEMA_VERSION = 1


def build_report(header: dict[str, Any], stages: list[dict[str, Any]],
                 records: list[dict[str, Any]], tolerances: dict[str, Any]) -> dict[str, Any]:
    records = sorted(records, key=lambda r: r["image"])
    summary = summarize(records, stages)
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **header, "stages": stages,
            "tolerances": tolerances, "records": records, "summary": summary,
            "gate": evaluate(summary, tolerances)}


def _clean(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, inf/nan written as strings."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_clean(report), indent=1, sort_keys=False) + "\n")


def read_report(path: Path) -> dict[str, Any]:
    report = read_json_object(path, "no such report")
    if report.get("schema") != SCHEMA:
        raise InputError(path, f"not a {SCHEMA} document")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise InputError(path, f"schema version {report.get('schema_version')} is not "
                         f"{SCHEMA_VERSION}")
    return report


def merge_reports(reports: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Join shards of one check: same checkpoint, folder, stages and tolerances."""
    first_path, first = reports[0]
    for path, other in reports[1:]:
        for key in ("checkpoint", "model_folder", "stages", "tolerances"):
            if other.get(key) != first.get(key):
                raise InputError(path, f"{key} differs from {first_path}'s: not a shard of "
                                 "the same check")
    records: dict[str, dict] = {}
    for _, report in reports:
        for record in report["records"]:
            records.setdefault(record["image"], record)
    images = {**first["images"], "shard": None,
              "count": len(records),
              "unreadable": sorted({u for _, r in reports for u in r["images"]["unreadable"]})}
    header = {k: first[k] for k in ("tool", "checkpoint", "model_folder")}
    merged = build_report({**header, "images": images}, first["stages"], list(records.values()),
                          first["tolerances"])
    blames = [r["blame"] for _, r in reports if r.get("blame")]
    if blames:
        merged["blame"] = blames[0]
    return merged


def write_junit(report: dict[str, Any], path: Path) -> None:
    """One testcase per stage and check; skipped stages as skipped testcases."""
    suite = ET.Element("testsuite", name="nanodet-unitv2 parity")
    failures = skipped = 0
    for stage in report["stages"]:
        if stage["status"] != "ran":
            case = ET.SubElement(suite, "testcase", classname=f"parity.{stage['name']}",
                                 name="stage")
            ET.SubElement(case, "skipped", message=stage["reason"] or "skipped")
            skipped += 1
    for check in report["gate"]["checks"]:
        case = ET.SubElement(suite, "testcase", classname=f"parity.{check['stage']}",
                             name=check["check"])
        if not check["passed"]:
            failures += 1
            ET.SubElement(case, "failure", message=f"{check['value']} (limit {check['limit']})")
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def print_summary(report: dict[str, Any], console: Console) -> None:
    gate = report["gate"]
    failing = {c["stage"] for c in gate["checks"] if not c["passed"]}
    table = Table(title=f"parity: {report['images']['count']} images", title_justify="left")
    for column in ("stage", "verdict", "matched>=0.4", "extra", "min IoU", "max dscore",
                   "max edge px", "AP50", "max dtensor", "vs"):
        table.add_column(column, no_wrap=True)
    for stage in report["stages"]:
        name = stage["name"]
        if stage["status"] != "ran":
            table.add_row(name, "[dim]skipped[/]", *[""] * 8)
            continue
        figures = report["summary"][name]
        band = figures["detections"]["bands"]["firmware"]
        tensor_max = max((t.get("max_abs", math.inf) for t in figures["tensors"].values()),
                         default=None)
        verdict = "[red]FAIL[/]" if name in failing else "[green]ok[/]"
        if name == "torch":
            verdict = "reference"
        table.add_row(name, verdict, f"{band['matched']}/{band['reference']}",
                      str(band["extra"]), _fmt(band["min_iou"]), _fmt(band["max_score_diff"]),
                      _fmt(band["max_edge_px"]), _fmt(figures["detections"]["ap50"]),
                      _fmt(tensor_max) if tensor_max is not None else "",
                      figures.get("compared_with") or "")
    console.print(table)
    for stage in report["stages"]:
        if stage["status"] != "ran":
            console.print(f"[dim]{stage['name']} skipped: {stage['reason']}[/]")
    for check in gate["checks"]:
        if not check["passed"]:
            console.print(f"[red]FAIL[/] {check['stage']}: {check['check']} = "
                          f"{_fmt(check['value'])} (limit {_fmt(check['limit'])})")
    if report.get("blame"):
        console.print(f"blame: {report['blame'].get('summary', '')}")
    if gate["passed"]:
        console.print("[green]parity: PASS[/]")
    else:
        console.print(f"[red]parity: FAIL[/], first failing stage: {gate['blamed_stage']}")
