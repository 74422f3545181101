"""The parity report: a versioned JSON document, and its terminal form (JUnit: parity.junit,
re-exported here as `write_junit`).

Schema `nanodet-unitv2/parity-report`, version 3 (the types of parity.report_types;
JSON Schema in parity/data/report.schema.json): tool, checkpoint, model_folder,
images, stages (the stage table), tolerances, records (per image), summary (per
stage, computed from records), gate (checks, verdict, blamed stage) and, with
--blame, blame; with --baseline, baseline (the drift from an earlier report).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.errors import InputError
from parity.drift_report import print_drift
from parity.gate import evaluate
from parity.json_shape import ShapeError
from parity.junit import write_junit
from parity.model_folder import read_json_object
from parity.report_codec import decode, encode
from parity.report_types import (
    SCHEMA,
    SCHEMA_VERSION,
    Checkpoint,
    Images,
    ModelFolderEntry,
    Record,
    Report,
    StageFigures,
    StageRow,
    TensorFigures,
    Timing,
)
from parity.summary import summarize
from parity.tolerance_types import Tolerances

__all__ = ["build_report", "merge_reports", "plain_json", "print_summary", "read_report",
           "write_json", "write_junit"]


def plain_json(value: Any) -> Any:
    """Plain JSON data: numpy scalars unwrapped, inf/nan written as strings."""
    return encode(value)


def decode_part(kind: Any, data: Any, at: str) -> Any:
    """Data a run produced as its report type (a ShapeError here is a bug, not bad input)."""
    return decode(kind, plain_json(data), at)


def build_report(header: dict[str, Any], stages: list[StageRow], records: list[Record | dict],
                 tolerances: Tolerances) -> Report:
    """The report of `records` (typed, or as a run makes them): summary and gate computed."""
    typed = [r if isinstance(r, Record) else decode_part(Record, r, f"records[{i}]")
             for i, r in enumerate(records)]
    typed.sort(key=lambda r: r.image)
    summary = summarize(typed, stages)
    return Report(schema=SCHEMA, schema_version=SCHEMA_VERSION, tool=header["tool"],
                  checkpoint=_typed(Checkpoint, header["checkpoint"], "checkpoint"),
                  model_folder=_typed(ModelFolderEntry, header["model_folder"],
                                      "model_folder"),
                  images=_typed(Images, header["images"], "images"), stages=stages,
                  tolerances=tolerances, records=typed, summary=summary,
                  gate=evaluate(summary, tolerances, stages), blame=header.get("blame"),
                  timing=_typed(Timing, header["timing"], "timing")
                  if header.get("timing") is not None else None)


def _typed(kind: type, value: Any, at: str) -> Any:
    return value if isinstance(value, kind) else decode_part(kind, value, at)


def write_document(document: Any, path: Path) -> None:
    """A typed document (a report, a diff) as JSON, keys in declaration order."""
    path.write_text(json.dumps(encode(document), indent=1, sort_keys=False) + "\n")


def write_json(report: Report, path: Path) -> None:
    write_document(report, path)


def read_report(path: Path) -> Report:
    """A report as `parity check` writes it, every key checked (the key path is named)."""
    data = read_json_object(path, "no such report")
    if data.get("schema") != SCHEMA:
        raise InputError(path, f"not a {SCHEMA} document")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(path, f"schema version {_short(data.get('schema_version'))} is "
                         f"not {SCHEMA_VERSION}")
    try:
        return decode(Report, data)
    except ShapeError as exc:
        raise InputError(path, str(exc)) from None


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


SAME_CHECK = ("checkpoint", "model_folder", "stages", "tolerances")
_SHARD = re.compile(r"([0-9]{1,9})/([0-9]{1,9})")


def _shard_of(path: Path, report: Report) -> tuple[int, int]:
    """(i, N) of a report of `parity check --shard i/N`."""
    text = report.images.shard
    if text is None:
        raise InputError(path, "images.shard: null: not a shard (merge joins the reports of "
                         "`parity check --shard i/N`, i = 1..N)")
    found = _SHARD.fullmatch(text)
    if not found or not 1 <= int(found[1]) <= int(found[2]):
        raise InputError(path, f"images.shard: {_short(text)} is not i/N with 1 <= i <= N")
    return int(found[1]), int(found[2])


def _check_shards(reports: list[tuple[Path, Report]]) -> None:
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


def merged_timing(timings: list[Timing | None]) -> Timing | None:
    """The shards' timings joined: the earliest start, each stage's seconds summed (None
    unless every shard has one)."""
    if not timings or any(t is None for t in timings):
        return None
    seconds: dict[str, float] = {}
    for timing in timings:
        for stage, value in timing.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    return Timing(started=min(t.started for t in timings), seconds=seconds)


def merge_reports(reports: list[tuple[Path, Report]]) -> Report:
    """Join the shards 1..N of one check: same checkpoint, folder, stages, tolerances and
    images; reports as `read_report` gives them."""
    first_path, first = reports[0]
    for path, other in reports[1:]:
        for key in SAME_CHECK:
            if getattr(other, key) != getattr(first, key):
                raise InputError(path, f"{key} differs from {first_path}'s: not a shard of "
                                 "the same check")
        if other.images.source != first.images.source:
            raise InputError(path, f"images.source differs from {first_path}'s: not a shard "
                             "of the same check")
    _check_shards(reports)
    records: dict[str, Record] = {}
    for path, report in reports:
        for index, record in enumerate(report.records):
            if record.image in records:
                raise InputError(path, f"records[{index}].image {_short(record.image)} is "
                                 "also in another shard")
            records[record.image] = record
    skipped = None
    if any(r.images.skipped is not None for _, r in reports):  # name -> why it was skipped
        skipped = dict(sorted({k: v for _, r in reports
                               for k, v in (r.images.skipped or {}).items()}.items()))
    images = replace(first.images, shard=None, count=len(records), skipped=skipped,
                     unreadable=sorted({u for _, r in reports for u in r.images.unreadable}))
    header = {"tool": first.tool, "checkpoint": first.checkpoint,
              "model_folder": first.model_folder, "images": images,
              "blame": next((r.blame for _, r in reports if r.blame), None),
              "timing": merged_timing([r.timing for _, r in reports])}
    return build_report(header, first.stages, list(records.values()), first.tolerances)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _stage_line(report: Report, stage: StageRow, failing: set[str]) -> list[str]:
    """The cells of a stage that ran in the terminal table."""
    figures = report.summary[stage.name]
    band = figures.detections.bands["firmware"]
    tensor_max = max((t.max_abs if isinstance(t, TensorFigures) else math.inf
                      for t in figures.tensors.values()), default=None)
    verdict = "[red]FAIL[/]" if stage.name in failing else "[green]ok[/]"
    if stage.reference:
        verdict = "reference"
    return [stage.name, verdict, f"{band.matched}/{band.reference}", str(band.extra),
            _fmt(band.min_iou), _fmt(band.max_score_diff), _fmt(band.max_edge_px),
            _fmt(figures.detections.ap50), _fmt(tensor_max) if tensor_max is not None else "",
            figures.compared_with or ""]


ERROR_LINE_LIMIT = 160  # characters of a stage's first error shown in the terminal


def first_error_line(figures: StageFigures, limit: int = ERROR_LINE_LIMIT) -> str:
    """The stage's first error (image: text) on one line, shortened to `limit` characters."""
    text = " ".join((figures.first_error or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def print_summary(report: Report, console: Console) -> None:
    """The stage table, skipped stages and photos, each crashed stage's first error, every
    failed check and the verdict."""
    gate = report.gate
    failing = {c.stage for c in gate.checks if not c.passed}
    table = Table(title=f"parity: {report.images.count} images", title_justify="left")
    for column in ("stage", "verdict", "matched>=0.4", "extra", "min IoU", "max dscore",
                   "max edge px", "AP50", "max dtensor", "vs"):
        table.add_column(column, no_wrap=True)
    for stage in report.stages:
        figures = report.summary.get(stage.name)
        if not stage.ran:
            table.add_row(stage.name, "[dim]skipped[/]", *[""] * 8)
        elif figures is not None and figures.errors >= figures.images:
            table.add_row(stage.name, "[red]ERROR[/]", *[""] * 8)  # no figure to show
        else:
            table.add_row(*_stage_line(report, stage, failing))
    console.print(table)
    for stage in report.stages:
        if not stage.ran:
            console.print(f"[dim]{stage.name} skipped: {escape(str(stage.reason))}[/]")
    for name, reason in (report.images.skipped or {}).items():
        console.print(f"[yellow]image skipped[/] {escape(name)}: {escape(reason)}")
    for stage in report.stages:
        figures = report.summary.get(stage.name)
        if figures is not None and figures.errors:
            console.print(f"[red]ERROR[/] {stage.name} failed on {figures.errors} of "
                          f"{figures.images} images: {escape(first_error_line(figures))}",
                          no_wrap=True, overflow="ellipsis")
    for check in gate.checks:
        if not check.passed and check.check != "errors":
            console.print(f"[red]FAIL[/] {check.stage}: {check.check} = "
                          f"{_fmt(check.value)} (limit {_fmt(check.limit)})")
    if report.blame:
        console.print(f"blame: {report.blame.get('summary', '')}")
    if report.baseline is not None:
        print_drift(report.baseline, gate.checks, [s.name for s in report.stages],
                    report.model_folder.class_names or (), console)
    # the verdict line itself goes to stdout (parity/cli.py)
