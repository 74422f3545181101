"""The parity report as JUnit XML: one testcase per stage and check, whatever happened.

Every stage of the stage table has the same testcases in every run (the gate's
fixed check names): a check that could not be computed is `<skipped message=...>`,
a failed check `<failure>`, and a stage that raised is an `<error>` on its
`errors` testcase carrying the exception text of every image it failed on. The
testsuite holds the `timestamp` and `properties` (checkpoint, model folder,
images, tool versions); each testcase has a `time`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from parity.report_types import Check, Report, StageFailed

SUITE_NAME = "nanodet-unitv2 parity"
ERRORS_CHECK = "errors"
ERROR_TYPE_FALLBACK = "StageFailed"  # an error text that names no exception type
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_EXCEPTION = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*): ")


def xml_text(text: str) -> str:
    """`text` with the characters XML 1.0 cannot hold shown as \\xNN escapes."""
    return _NOT_XML.sub(lambda m: repr(m[0])[1:-1], text)


def error_type(text: str) -> str:
    """The exception type an error text starts with ("RuntimeError: ..."), else a fallback."""
    found = _EXCEPTION.match(text)
    return found[1] if found else ERROR_TYPE_FALLBACK


def stage_errors(report: Report, stage: str) -> list[tuple[str, str]]:
    """(image, error text) of every image the stage failed on, in image order."""
    return [(record.image, entry.error) for record in report.records
            for name, entry in record.stages.items()
            if name == stage and isinstance(entry, StageFailed)]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def _flat(prefix: str, value: Any) -> list[tuple[str, str]]:
    """Nested mappings as (dotted name, text) pairs; None as the empty string."""
    if isinstance(value, Mapping):
        return [pair for key, item in value.items() for pair in _flat(f"{prefix}.{key}", item)]
    return [(prefix, "" if value is None else str(value))]


def suite_properties(report: Report) -> list[tuple[str, str]]:
    """What the run checked and with which tools, as (name, value)."""
    folder = report.model_folder
    return [("report.schema", f"{report.schema} {report.schema_version}"),
            ("checkpoint.file", report.checkpoint.file),
            ("checkpoint.sha256", report.checkpoint.sha256 or ""),
            ("model_folder.path", folder.path), ("model_folder.layout", folder.layout or ""),
            ("model_folder.manifest_sha256", folder.manifest_sha256 or ""),
            ("images.source", report.images.source), ("images.count", str(report.images.count)),
            ("images.shard", report.images.shard or ""),
            *_flat("tool", report.tool)]


def _error_element(case: ET.Element, report: Report, check: Check) -> None:
    """The `<error>` of a stage that raised: the first error as message, every image's as body."""
    errors = stage_errors(report, check.stage)
    first = errors[0][1] if errors else str(check.value)
    figures = report.summary.get(check.stage)
    of = f" of {figures.images}" if figures is not None else ""
    element = ET.SubElement(case, "error", message=xml_text(
        f"{_number(check.value)}{of} images failed; first: {first}"), type=error_type(first))
    element.text = xml_text("\n".join(f"{image}: {text}" for image, text in errors))


def _outcome(case: ET.Element, report: Report, check: Check) -> str:
    """Adds the check's outcome element; returns passed, skipped, failure or error."""
    if check.skipped is not None:
        ET.SubElement(case, "skipped", message=xml_text(check.skipped))
        return "skipped"
    if check.passed:
        return "passed"
    if check.check == ERRORS_CHECK:
        _error_element(case, report, check)
        return "error"
    failure = ET.SubElement(case, "failure", message=xml_text(
        f"{_number(check.value)} (limit {_number(check.limit)})"), type="ParityCheckFailed")
    failure.text = xml_text(f"{check.stage}: {check.check} = {_number(check.value)}, "
                            f"limit {_number(check.limit)}")
    return "failure"


def junit_tree(report: Report, *, timestamp: datetime | None = None,
               stage_seconds: Mapping[str, float] | None = None) -> ET.ElementTree:
    """The JUnit document; `stage_seconds` (stage -> seconds it ran) is the `time` of each
    stage's `errors` testcase (running the stage), its other checks take no time. Both
    default to the report's `timing`, else now and 0."""
    timing = report.timing
    if timestamp is None and timing is not None:
        timestamp = datetime.fromisoformat(timing.started)
    if stage_seconds is None and timing is not None:
        stage_seconds = timing.seconds
    when = (timestamp or datetime.now(UTC)).astimezone(UTC)
    suite = ET.Element("testsuite", name=SUITE_NAME)
    properties = ET.SubElement(suite, "properties")
    for name, value in suite_properties(report):
        ET.SubElement(properties, "property", name=name, value=xml_text(value))
    counts = {"passed": 0, "skipped": 0, "failure": 0, "error": 0}
    total = 0.0
    for check in report.gate.checks:
        seconds = (stage_seconds or {}).get(check.stage, 0.0) \
            if check.check == ERRORS_CHECK else 0.0
        total += seconds
        case = ET.SubElement(suite, "testcase", classname=f"parity.{check.stage}",
                             name=check.check, time=f"{seconds:.3f}")
        counts[_outcome(case, report, check)] += 1
    suite.set("tests", str(len(report.gate.checks)))
    suite.set("failures", str(counts["failure"]))
    suite.set("errors", str(counts["error"]))
    suite.set("skipped", str(counts["skipped"]))
    suite.set("time", f"{total:.3f}")
    suite.set("timestamp", when.strftime("%Y-%m-%dT%H:%M:%S"))  # UTC, as Ant writes it
    return ET.ElementTree(suite)


def write_junit(report: Report, path: Path, *, timestamp: datetime | None = None,
                stage_seconds: Mapping[str, float] | None = None) -> None:
    """The JUnit XML of `report` (see `junit_tree`) into `path`."""
    tree = junit_tree(report, timestamp=timestamp, stage_seconds=stage_seconds)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
