"""The pytest plugin (parity/pytest_plugin.py) as a user's release-gating tests use it.

A generated test file (checks of a good and a broken converted NanoDet-m folder, a
missing folder, an unknown profile) runs in a separate `python -m pytest`, with
autoloaded plugins off and this one loaded by `-p`, as the `pytest11` entry point
loads it. Its terminal output, pytest's own JUnit XML and the report folders are
then examined.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

import convert
from parity.pytest_plugin import report_folder_name
from tests.conftest import IMAGES, LEGACY_CFG, LEGACY_PTH
from tests.report_validation import assert_valid_report

GENERATED_TESTS = """
import pytest
from parity.pytest_plugin import assert_parity

CHECKPOINT, IMAGES = {checkpoint!r}, {images!r}
pytestmark = pytest.mark.parity(config={config!r}, only={{"device"}})


def test_good(parity_check):
    assert_parity(parity_check(CHECKPOINT, {good!r}, IMAGES))


def test_swapped(parity_check):
    assert_parity(parity_check(CHECKPOINT, {swapped!r}, IMAGES))


def test_missing_folder(parity_check):
    parity_check(CHECKPOINT, {missing!r}, IMAGES)


@pytest.mark.parity(profile="no-such-profile")
def test_unknown_profile(parity_check):
    parity_check(CHECKPOINT, {good!r}, IMAGES)
"""
HEAVY_MODULES = ("numpy", "torch", "onnx", "onnxruntime", "ncnn", "cv2")


@dataclass(frozen=True)
class Run:
    """A finished `python -m pytest` on the generated tests."""

    folder: Path
    returncode: int
    stdout: str
    junit: etree._Element

    def case(self, name: str) -> etree._Element:
        return self.junit.xpath(f"//testcase[@name='{name}']")[0]

    def properties(self, name: str) -> dict[str, str]:
        return {p.get("name"): p.get("value") for p in self.case(name).iter("property")}

    def section(self, header: str) -> list[str]:
        """The non-empty lines under the `___ header ___` line, up to the next header."""
        lines = self.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if re.fullmatch(rf"_+ {header} _+", line))
        body = []
        for line in lines[start + 1:]:
            if re.match(r"^(_{3,}|={3,}|-{3,}) ", line):
                break
            if line.strip():
                body.append(line)
        return body


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project: the converted NanoDet-m, the same with cls/dis swapped in
    model.json, two photos, a pytest.ini choosing the verify profile and a tolerances
    file, the tests."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "models").mkdir()
    good = root / "models" / "unitv2"
    convert.convert(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True, output=good,
                    verify=False)
    swapped = root / "models" / "swapped"
    shutil.copytree(good, swapped)
    doc = json.loads((swapped / "model.json").read_text())
    for node in doc["model"]["modelOutputNodes"]:
        node["cls_pred"], node["dis_pred"] = node["dis_pred"], node["cls_pred"]
    (swapped / "model.json").write_text(json.dumps(doc))
    images = root / "photos"
    images.mkdir()
    for name in ("astronaut.jpg", "coffee.jpg"):
        shutil.copy(IMAGES / name, images / name)
    (root / "tolerances.toml").write_text("[detections]\nmax_edge_px = 7.5\n")
    (root / "pytest.ini").write_text("[pytest]\nparity_profile = verify\n"
                                     "parity_tolerances = tolerances.toml\n")
    (root / "test_release.py").write_text(GENERATED_TESTS.format(
        checkpoint=str(LEGACY_PTH), config=str(LEGACY_CFG), images=str(images),
        good=str(good), swapped=str(swapped), missing=str(root / "models" / "missing")))
    return root


def run_pytest(project: Path, *args: str) -> Run:
    """`python -m pytest -p parity.pytest_plugin ARGS` in the project, its JUnit XML read."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    junit = project / "junit.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "parity.pytest_plugin", "-p", "no:cacheprovider",
         "-ra", "--junitxml", str(junit), *args], cwd=project, env=env, capture_output=True,
        text=True, timeout=600, check=False)
    return Run(project, result.returncode, result.stdout + result.stderr,
               etree.parse(str(junit)).getroot())


@pytest.fixture(scope="module")
def kept(project) -> Run:
    """All generated tests, reports kept in reports/."""
    return run_pytest(project, "--parity-reports", "reports", "test_release.py")


def report_paths(run: Run, test: str) -> dict[str, Path]:
    return {kind: Path(run.properties(test)[f"parity_{kind}"])
            for kind in ("json", "junit", "html")}


def test_a_passing_check_passes(kept):
    case = kept.case("test_good")
    assert not case.xpath("failure|error|skipped"), kept.stdout
    report = json.loads(report_paths(kept, "test_good")["json"].read_text())
    assert_valid_report(report)
    assert report["gate"]["passed"] is True
    limits = report["tolerances"]["detections"]
    assert limits["min_iou"] == 0.95  # pytest.ini's verify profile
    assert limits["max_edge_px"] == 7.5  # pytest.ini's tolerances file


def test_a_broken_folder_fails_listing_every_failing_check(kept):
    assert kept.returncode == 1
    lines = kept.section("test_swapped")
    report = json.loads(report_paths(kept, "test_swapped")["json"].read_text())
    failing = [c for c in report["gate"]["checks"] if not c["passed"]]
    assert failing and report["gate"]["blamed_stage"] == "device"
    assert lines[0].startswith("parity: FAIL, first failing stage: device")
    assert "blamed stage: device" in lines
    for check in failing:
        assert any(line.startswith(f"  {check['stage']} {check['check']}: ") and
                   f"(limit {check['limit']:g})" in line for line in lines), check
    assert len([line for line in lines if re.match(r"  device \S+: ", line)]) == len(failing)
    for kind, path in report_paths(kept, "test_swapped").items():
        assert f"  {kind}: {path}" in lines
    assert not any("Traceback" in line or "def test_" in line for line in lines)


@pytest.mark.parametrize(("test", "problem"), [
    ("test_missing_folder", "missing: not a model folder (no such directory)"),
    ("test_unknown_profile", "no-such-profile"),
])
def test_bad_input_is_an_error_of_one_line(kept, test, problem):
    assert kept.section(f"ERROR at call of {test}") == [
        line for line in kept.section(f"ERROR at call of {test}")
        if line.startswith("parity: error: ")]
    [line] = kept.section(f"ERROR at call of {test}")
    assert problem in line
    assert re.search(rf"^ERROR test_release\.py::{test} - parity: error: ", kept.stdout,
                     re.MULTILINE)
    assert re.search(r"1 failed, 1 passed, 2 errors", kept.stdout)


def test_reports_land_in_the_folder_named_after_the_node_id(kept):
    for test in ("test_good", "test_swapped"):
        folder = kept.folder / "reports" / report_folder_name(f"test_release.py::{test}")
        assert sorted(p.name for p in folder.iterdir()) == \
            ["parity.html", "parity.json", "parity.xml"]
        assert {path.resolve() for path in report_paths(kept, test).values()} == \
            {path.resolve() for path in folder.iterdir()}
        assert etree.parse(str(folder / "parity.xml")).getroot().tag in ("testsuites",
                                                                         "testsuite")
        assert "<html" in (folder / "parity.html").read_text()[:1000].lower()


def test_without_an_option_reports_go_to_the_tests_tmp_path(project, tmp_path):
    run = run_pytest(project, "--basetemp", str(tmp_path / "base"), "test_release.py",
                     "-k", "test_good")
    assert run.returncode == 0, run.stdout
    paths = report_paths(run, "test_good")
    assert all(path.is_file() and path.is_relative_to(tmp_path / "base")
               and path.parent.name == "parity" for path in paths.values())


@pytest.mark.parametrize("nodeid", [
    "tests/test_a.py::test_b", "../../etc/passwd", "t.py::test[..]", "t.py::test[/]",
    "t.py::test[ü ß]", "t.py::" + "x" * 5000, ".hidden::test",
])
def test_report_folder_names_are_safe_file_names(nodeid):
    name = report_folder_name(nodeid)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{8}", name), name
    assert len(name) <= 120
    assert report_folder_name(nodeid + "x") != name


def test_two_ids_that_read_alike_get_two_folders():
    assert report_folder_name("t.py::test[a/b]") != report_folder_name("t.py::test[a_b]")


def test_importing_the_plugin_loads_nothing_heavy():
    code = ("import sys, parity.pytest_plugin; "
            f"print([m for m in {HEAVY_MODULES!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_the_installed_entry_point_names_the_plugin():
    points = [p for p in importlib.metadata.entry_points(group="pytest11")
              if p.value == "parity.pytest_plugin"]
    if not points:
        pytest.skip("nanodet-unitv2's pytest11 entry point is not installed (pyproject.toml)")
    assert [p.name for p in points] == ["nanodet_unitv2"]


def test_a_report_folder_that_is_a_file_is_a_usage_error(project):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "parity.pytest_plugin", "-p", "no:cacheprovider",
         "--parity-reports", "pytest.ini", "test_release.py"], cwd=project,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, capture_output=True,
        text=True, timeout=120, check=False)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.strip() == "ERROR: --parity-reports: pytest.ini: not a folder"
