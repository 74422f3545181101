"""The parity report: a versioned JSON document, and its JUnit and terminal forms.

Schema `nanodet-unitv2/parity-report`, version 1 (documented in README):
tool, checkpoint, model_folder, images, stages, tolerances, records (per
image), summary (per stage, computed from records), gate (checks, verdict,
blamed stage) and, with --blame, blame.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.errors import InputError
from parity.gate import check_tolerances, evaluate
from parity.json_shape import conform
from parity.model_folder import read_json_object
from parity.report_shape import REPORT
from parity.summary import summarize

SCHEMA = "nanodet-unitv2/parity-report"
SCHEMA_VERSION = 1


def build_report(header: dict[str, Any], stages: list[dict[str, Any]],
                 records: list[dict[str, Any]], tolerances: dict[str, Any]) -> dict[str, Any]:
    records = sorted(records, key=lambda r: r["image"])
    summary = summarize(records, stages)
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **header, "stages": stages,
            "tolerances": tolerances, "records": records, "summary": summary,
            "gate": evaluate(summary, tolerances, stages)}


def plain_json(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, inf/nan written as strings."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(plain_json(report), indent=1, sort_keys=False) + "\n")


def read_report(path: Path) -> dict[str, Any]:
    """A report as `parity check` writes it, checked where merge and the summaries read it."""
    report = read_json_object(path, "no such report")
    if report.get("schema") != SCHEMA:
        raise InputError(path, f"not a {SCHEMA} document")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise InputError(path, f"schema version {_short(report.get('schema_version'))} is "
                         f"not {SCHEMA_VERSION}")
    report = conform(path, report, REPORT)
    check_tolerances(path, report["tolerances"], [stage["name"] for stage in report["stages"]])
    return report


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


SAME_CHECK = ("checkpoint", "model_folder", "stages", "tolerances")
_SHARD = re.compile(r"([0-9]{1,9})/([0-9]{1,9})")


def _shard_of(path: Path, report: dict[str, Any]) -> tuple[int, int]:
    """(i, N) of a report of `parity check --shard i/N`."""
    text = report["images"]["shard"]
    if text is None:
        raise InputError(path, "images.shard: null: not a shard (merge joins the reports of "
                         "`parity check --shard i/N`, i = 1..N)")
    found = _SHARD.fullmatch(text)
    if not found or not 1 <= int(found[1]) <= int(found[2]):
        raise InputError(path, f"images.shard: {_short(text)} is not i/N with 1 <= i <= N")
    return int(found[1]), int(found[2])


def _check_shards(reports: list[tuple[Path, dict[str, Any]]]) -> None:
    """Every shard 1..N of one N, each once."""
    first_path = reports[0][0]
    seen: dict[int, Path] = {}
    count = _shard_of(*reports[0])[1]
    for path, report in reports:
        index, of = _shard_of(path, report)
        if of != count:
            raise InputError(path, f"images.shard: {index}/{of}, but {first_path} is a shard "
                             f"of {count}")
        if index in seen:
            raise InputError(path, f"images.shard: {index}/{of} again (also {seen[index]})")
        seen[index] = path
    missing = next((i for i in range(1, count + 1) if i not in seen), None)
    if missing is not None:
        raise InputError(first_path, f"images.shard: shard {missing}/{count} is missing: "
                         f"give all {count} shards")


def merge_reports(reports: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Join the shards 1..N of one check: same checkpoint, folder, stages, tolerances and
    images; reports as `read_report` gives them."""
    first_path, first = reports[0]
    for path, other in reports[1:]:
        for key in SAME_CHECK:
            if other[key] != first[key]:
                raise InputError(path, f"{key} differs from {first_path}'s: not a shard of "
                                 "the same check")
        if other["images"]["source"] != first["images"]["source"]:
            raise InputError(path, f"images.source differs from {first_path}'s: not a shard "
                             "of the same check")
    _check_shards(reports)
    records: dict[str, dict] = {}
    for path, report in reports:
        for index, record in enumerate(report["records"]):
            if record["image"] in records:
                raise InputError(path, f"records[{index}].image {_short(record['image'])} is "
                                 "also in another shard")
            records[record["image"]] = record
    images = {**first["images"], "shard": None, "count": len(records),
              "unreadable": sorted({u for _, r in reports for u in r["images"]["unreadable"]})}
    if any("skipped" in r["images"] for _, r in reports):  # image name -> why it was skipped
        skipped = {k: v for _, r in reports for k, v in r["images"].get("skipped", {}).items()}
        images["skipped"] = dict(sorted(skipped.items()))
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
        if stage["reference"]:
            verdict = "reference"
        table.add_row(name, verdict, f"{band['matched']}/{band['reference']}",
                      str(band["extra"]), _fmt(band["min_iou"]), _fmt(band["max_score_diff"]),
                      _fmt(band["max_edge_px"]), _fmt(figures["detections"]["ap50"]),
                      _fmt(tensor_max) if tensor_max is not None else "",
                      figures.get("compared_with") or "")
    console.print(table)
    for stage in report["stages"]:
        if stage["status"] != "ran":
            console.print(f"[dim]{stage['name']} skipped: {escape(str(stage['reason']))}[/]")
    for name, reason in report["images"].get("skipped", {}).items():
        console.print(f"[yellow]image skipped[/] {escape(name)}: {escape(reason)}")
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
