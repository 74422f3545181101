"""JUnit XML: the same testcases per stage and check whatever happens, a crashed stage as an
<error> with its exception text, skipped checks with their reason, valid against the JUnit XSD
(tests/data/junit.xsd, see tests/data/README.md)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from common.errors import InputError
from convert import convert_checkpoint
from parity.cli import main
from parity.report import build_report, merged_timing, print_summary, read_report, write_junit
from parity.report_codec import decode
from parity.report_types import Report, Timing
from parity.stage_registry import StageDescriptor
from parity.stages import STAGES, StageInputs, onnx_stage
from tests.crafted_reports import shard_reports
from tests.junit_validation import cases, outcome, xsd_problems
from tests.report_validation import assert_valid_report

CRASH = "broken op Foo \x00 at layer 3"  # a NUL, which XML 1.0 cannot hold


# ----------------------------------------------------------------------------- crafted reports

def rebuilt(data: dict) -> Report:
    """A report dict's records gated again (as a run would have produced them)."""
    report = decode(Report, data)
    header = {"tool": report.tool, "checkpoint": report.checkpoint,
              "model_folder": report.model_folder, "images": report.images}
    return build_report(header, report.stages, data["records"], report.tolerances)


def crashed(data: dict, stage: str, error: str) -> dict:
    broken = copy.deepcopy(data)
    for record in broken["records"]:
        record["stages"][stage] = {"error": error}
    return broken


@pytest.fixture(scope="module")
def clean() -> dict:
    return shard_reports(1, images=3)[0]


def write(report: Report, path: Path) -> Path:
    write_junit(report, path, timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                stage_seconds={"onnx": 1.25})
    return path


def test_the_xsd_refuses_what_parity_used_to_write(tmp_path):
    """The validation can fail: no `errors` count on the suite, an unknown element."""
    old = tmp_path / "old.xml"
    old.write_text('<testsuite name="p" tests="1" failures="1" skipped="0"><testcase '
                   'classname="parity.onnx" name="errors"><failure message="7 (limit 0)"/>'
                   '</testcase></testsuite>')
    assert any("errors" in p for p in xsd_problems(old))
    odd = tmp_path / "odd.xml"
    odd.write_text('<testsuite name="p" tests="1" failures="0" errors="0"><testcase '
                   'name="x"><crashed/></testcase></testsuite>')
    assert xsd_problems(odd)


def test_a_clean_report_is_valid_junit_with_time_timestamp_and_properties(clean, tmp_path):
    path = write(rebuilt(clean), tmp_path / "r.xml")
    assert xsd_problems(path) == []
    suite = ET.parse(path).getroot()
    assert suite.get("timestamp") == "2026-01-02T03:04:05"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["checkpoint.sha256"] == clean["checkpoint"].get("sha256", "")
    assert properties["model_folder.path"] == clean["model_folder"]["path"]
    assert any(name.startswith("tool.") for name in properties)
    found = cases(path)
    assert suite.get("tests") == str(len(found)) == str(len(clean["gate"]["checks"]))
    assert all(case.get("time") is not None for case in found.values())
    assert found["parity.onnx", "errors"].get("time") == "1.250"
    assert suite.get("time") == "1.250"


def test_a_skipped_stage_has_every_check_skipped_with_the_reason(clean, tmp_path):
    found = cases(write(rebuilt(clean), tmp_path / "r.xml"))
    sim = {name: case for (cls, name), case in found.items() if cls == "parity.onnx-sim"}
    device = {name for (cls, name) in found if cls == "parity.device"}  # vs onnx, like sim
    assert set(sim) - {"inputs.identical_fraction"} == device - {"inputs.device_input_diff"}
    assert any(name.startswith("tensors.") for name in sim)
    for case in sim.values():
        assert outcome(case) == "skipped"
        assert "model.sim.onnx absent" in case.find("skipped").get("message")


def test_a_crashed_stage_keeps_its_testcases_and_is_an_error(clean, tmp_path):
    good = write(rebuilt(clean), tmp_path / "good.xml")
    bad = write(rebuilt(crashed(clean, "onnx", f"RuntimeError: {CRASH}")), tmp_path / "bad.xml")
    assert xsd_problems(bad) == []
    assert list(cases(bad)) == list(cases(good))
    onnx = {name: case for (cls, name), case in cases(bad).items() if cls == "parity.onnx"}
    error = onnx.pop("errors").find("error")
    assert error.get("type") == "RuntimeError"
    assert "broken op Foo" in error.get("message") and "3 of 3 images" in error.get("message")
    assert error.text.count("broken op Foo \\x00 at layer 3") == 3
    for case in onnx.values():
        assert outcome(case) == "skipped"
        assert "failed on every image" in case.find("skipped").get("message")
    suite, before = ET.parse(bad).getroot(), ET.parse(good).getroot()
    assert (before.get("errors"), suite.get("errors")) == ("0", "1")
    assert suite.get("failures") == before.get("failures")  # the device's own input check


def test_an_error_without_an_exception_type_still_has_one(clean, tmp_path):
    report = rebuilt(crashed(clean, "device", "no reference: torch did not run on this image"))
    error = cases(write(report, tmp_path / "r.xml"))["parity.device", "errors"].find("error")
    assert error.get("type") == "StageFailed" and "no reference" in error.text


# ----------------------------------------------------------------------------- a real run

class Crashing:
    """A runner that raises on every image."""

    def __init__(self, runner):
        self.runner, self.name, self.output_names = runner, runner.name, runner.output_names

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        raise ValueError(CRASH.replace("\x00", "") + "\nsecond line of the trace")


def crashing_onnx_stage(descriptor: StageDescriptor, inputs: StageInputs):
    stage = onnx_stage(descriptor, inputs)
    stage.runner = Crashing(stage.runner)
    return stage


@contextlib.contextmanager
def registered(descriptor: StageDescriptor) -> Iterator[None]:
    STAGES.register(descriptor)
    try:
        yield
    finally:
        STAGES.unregister(descriptor.name)


@pytest.fixture(scope="module")
def folder(small_checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("junit") / "legacy"
    convert_checkpoint(small_checkpoints["legacy"], output=out, verify=False, legacy_head=True)
    return out


def run_check(checkpoint: Path, folder: Path, out: Path) -> tuple[int, str, Path]:
    out.mkdir()
    result = CliRunner().invoke(main, [
        "check", str(checkpoint), str(folder), "--synthetic", "0", "-q",
        "--json", str(out / "r.json"), "--junit", str(out / "r.xml")])
    assert_valid_report(json.loads((out / "r.json").read_text()))
    return result.exit_code, result.stderr, out / "r.xml"


def test_a_stage_crashing_on_every_image_gives_the_clean_run_s_testcases(
        small_checkpoints, folder, tmp_path):
    checkpoint = small_checkpoints["legacy"]
    with registered(StageDescriptor("onnx-extra", 25, onnx_stage, ("onnx",))):
        _, _, good = run_check(checkpoint, folder, tmp_path / "good")
    with registered(StageDescriptor("onnx-extra", 25, crashing_onnx_stage, ("onnx",))):
        code, err, bad = run_check(checkpoint, folder, tmp_path / "bad")
    assert code == 1, err
    assert xsd_problems(good) == [] and xsd_problems(bad) == []
    assert list(cases(bad)) == list(cases(good))
    mine = {name: case for (cls, name), case in cases(bad).items() if cls == "parity.onnx-extra"}
    assert any(name.startswith("tensors.") for name in mine)
    error = mine.pop("errors").find("error")
    assert error.get("type") == "ValueError" and "broken op Foo" in error.text
    assert all(outcome(case) == "skipped" for case in mine.values())
    line = next(line for line in err.splitlines() if "onnx-extra failed on" in line)
    assert "ValueError: broken op Foo" in line and "second line" not in err


def test_the_terminal_shows_a_crashed_stage_s_first_error_on_one_shortened_line(clean):
    report = rebuilt(crashed(clean, "onnx", "RuntimeError: " + "long words " * 40))
    out = io.StringIO()
    print_summary(report, Console(file=out, width=100, color_system=None))
    lines = [line for line in out.getvalue().splitlines() if "onnx failed on" in line]
    assert len(lines) == 1 and "3 of 3 images" in lines[0]
    assert "RuntimeError: long words" in lines[0] and len(lines[0]) <= 100


# ----------------------------------------------------------------------------- timing

TIMING = {"started": "2026-03-04T05:06:07+01:00", "seconds": {"torch": 2.0, "onnx": 0.5}}


def timed(data: dict, timing: dict) -> Report:
    report = decode(Report, data)
    header = {"tool": report.tool, "checkpoint": report.checkpoint,
              "model_folder": report.model_folder, "images": report.images, "timing": timing}
    return build_report(header, report.stages, data["records"], report.tolerances)


def test_the_report_s_timing_gives_the_timestamp_and_each_stage_s_time(clean, tmp_path):
    path = tmp_path / "r.xml"
    write_junit(timed(clean, TIMING), path)
    assert xsd_problems(path) == []
    suite, found = ET.parse(path).getroot(), cases(path)
    assert suite.get("timestamp") == "2026-03-04T04:06:07"  # in UTC
    assert found["parity.torch", "errors"].get("time") == "2.000"
    assert found["parity.onnx", "detections.ap50"].get("time") == "0.000"
    assert suite.get("time") == "2.500"


def test_merged_shards_sum_their_timing():
    later = {"started": "2026-03-04T06:00:00+01:00", "seconds": {"torch": 1.0}}
    shards = [decode(Timing, TIMING), decode(Timing, later)]
    assert merged_timing(shards) == Timing(started=TIMING["started"],
                                           seconds={"torch": 3.0, "onnx": 0.5})
    assert merged_timing([shards[0], None]) is None


@pytest.mark.parametrize("timing, phrase", [
    ({"started": "yesterday", "seconds": {}}, "timing.started: 'yesterday' is not an ISO 8601"),
    ({"started": TIMING["started"], "seconds": {"onnx": "nan"}}, "timing.seconds.onnx: nan"),
])
def test_a_report_with_a_bad_timing_is_refused_naming_the_key(clean, tmp_path, timing, phrase):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**clean, "timing": timing}))
    with pytest.raises(InputError, match=re.escape(phrase)):
        read_report(path)


def test_a_real_run_times_each_stage(small_checkpoints, folder, tmp_path):
    """The report's `timing` holds the seconds each stage ran; JUnit shows them."""
    code, err, xml = run_check(small_checkpoints["legacy"], folder, tmp_path / "timed")
    assert code in (0, 1), err
    report = json.loads((xml.parent / "r.json").read_text())
    seconds = report["timing"]["seconds"]
    ran = {s["name"] for s in report["stages"] if s["status"] == "ran"}
    assert set(seconds) == ran and all(value > 0 for value in seconds.values())
    assert datetime.fromisoformat(report["timing"]["started"]).utcoffset() is not None
    timed = [float(c.get("time")) for c in cases(xml).values()]
    assert sum(timed) > 0 and xsd_problems(xml) == []
