"""The Python API as a user calls it: `convert.convert(...)`, `parity.check(...)` and the
report writers, giving what the commands give for the same inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

import convert
import parity
from parity.cli import main as parity_cli
from tests.conftest import IMAGES, LEGACY_CFG, LEGACY_PTH, photo
from tests.junit_validation import cases, outcome, xsd_problems
from tests.report_validation import assert_valid_report

RUN_DEPENDENT = ("tool", "timing")  # keys that differ between two runs of one check


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def converted(tmp) -> convert.ConvertResult:
    """The real legacy NanoDet-m converted through the API, verified on two photos."""
    frames = [(name, photo(name)) for name in ("astronaut", "coffee")]
    return convert.convert(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True,
                           output=tmp / "legacy", frames=frames)


@pytest.fixture(scope="module")
def two_photos(tmp) -> Path:
    folder = tmp / "photos"
    folder.mkdir()
    for name in ("astronaut.jpg", "chelsea.jpg"):
        shutil.copy(IMAGES / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def swapped(tmp, converted) -> Path:
    """The converted folder with cls_pred and dis_pred swapped in model.json."""
    folder = tmp / "cls-dis-swapped"
    shutil.copytree(converted.folder, folder)
    doc = json.loads((folder / "model.json").read_text())
    for node in doc["model"]["modelOutputNodes"]:
        node["cls_pred"], node["dis_pred"] = node["dis_pred"], node["cls_pred"]
    (folder / "model.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="module")
def good(converted, two_photos) -> parity.ParityReport:
    return parity.check(LEGACY_PTH, converted.folder, two_photos, config=LEGACY_CFG)


@pytest.fixture(scope="module")
def broken(swapped, two_photos) -> parity.ParityReport:
    return parity.check(LEGACY_PTH, swapped, two_photos, config=LEGACY_CFG)


def cli_report(tmp: Path, *args: str | Path) -> tuple[int, dict]:
    """(exit code, JSON report) of `parity check ARGS --json ... -q`."""
    out = tmp / "cli.json"
    out.unlink(missing_ok=True)
    result = CliRunner().invoke(parity_cli, ["check", *map(str, args), "--json", str(out), "-q"])
    return result.exit_code, json.loads(out.read_text())


def run_independent(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in RUN_DEPENDENT}


def test_convert_returns_a_typed_result(converted):
    assert converted.folder.is_dir() and (converted.folder / "model.json").is_file()
    assert converted.manifest["layout"] == "legacy"
    assert converted.verification is not None and converted.verification.passed
    assert converted.passed is True and converted.verification.images == 2
    assert converted.exit_code == 0


def test_convert_refuses_bad_input_with_an_input_error(tmp):
    with pytest.raises(parity.InputError, match="stride64"):
        convert.convert(LEGACY_PTH, config=LEGACY_CFG, output=tmp / "never", stride64="keep")
    assert not (tmp / "never").exists()


def test_a_good_folder_passes(good):
    assert good.passed and good.blamed_stage is None and good.failing_stages == []
    assert good.report.images.count == 2
    assert good.report.images.source.endswith("photos")


def test_a_broken_folder_fails_blamed_on_the_device(broken):
    assert not broken.passed
    assert broken.blamed_stage == "device"
    assert broken.failing_stages == ["device"]


@pytest.mark.parametrize("which", ["good", "broken"])
def test_the_json_is_what_parity_check_writes(request, tmp, which, two_photos):
    result = request.getfixturevalue(which)
    written = result.write_json(tmp / f"{which}.json")
    report = json.loads(written.read_text())
    assert_valid_report(report)
    assert report == result.as_json()
    folder = request.getfixturevalue("swapped") if which == "broken" else \
        request.getfixturevalue("converted").folder
    code, cli = cli_report(tmp, LEGACY_PTH, folder, "--images", two_photos,
                           "--config", LEGACY_CFG)
    assert code == (0 if result.passed else 1)
    assert run_independent(report) == run_independent(cli)
    assert report["gate"]["passed"] is result.passed


def test_junit_and_html_are_written(tmp, broken):
    junit = broken.write_junit(tmp / "broken.xml")
    assert xsd_problems(junit) == []
    failed = {classname for (classname, _), case in cases(junit).items()
              if outcome(case) == "failure"}
    assert failed == {"parity.device"}
    html = broken.write_html(tmp / "broken.html")
    text = html.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and "device" in text


def test_a_report_never_overwrites_an_input(tmp, good):
    before = LEGACY_PTH.read_bytes()[:4096]
    with pytest.raises(parity.InputError, match="overwrite"):
        good.write_json(LEGACY_PTH)
    with pytest.raises(parity.InputError, match="does not exist"):
        good.write_json(tmp / "no-such-folder" / "r.json")
    assert LEGACY_PTH.read_bytes()[:4096] == before
    assert list(tmp.glob("*.partial")) == []


def test_bundled_photos_and_synthetic_frames_by_default(converted):
    result = parity.check(LEGACY_PTH, converted.folder, config=LEGACY_CFG, synthetic=0,
                          only={"onnx"})
    assert result.passed
    assert result.report.images.source == "bundled+synthetic:0"
    assert result.report.images.count == len(list(IMAGES.glob("*.jpg")))
    assert [s.name for s in result.report.stages if s.ran] == ["torch", "onnx"]


def test_frames_in_memory(converted):
    frame = cv2.imread(str(IMAGES / "rocket.jpg"))
    result = parity.check(LEGACY_PTH, converted.folder, [("rocket", frame)],
                          config=LEGACY_CFG, only={"ncnn"})
    assert result.passed and result.report.images.source == "in-memory"


def test_bad_input_raises_an_input_error(tmp, converted):
    with pytest.raises(parity.InputError, match="no such image folder"):
        parity.check(LEGACY_PTH, converted.folder, tmp / "absent", config=LEGACY_CFG)
    with pytest.raises(parity.InputError, match="--shard"):
        parity.check(LEGACY_PTH, converted.folder, config=LEGACY_CFG, synthetic=0,
                     shard=(3, 2))


def test_importing_the_packages_loads_no_heavy_module():
    code = ("import sys, parity, convert; "
            "print(sorted(m for m in ('torch', 'onnx', 'ncnn', 'cv2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_the_api_names_are_the_functions():
    assert callable(parity.check) and parity.check.__module__ == "parity.api"
    assert convert.convert is convert.convert_checkpoint


def test_convert_without_verification_has_no_verdict(small_checkpoints, tmp):
    result = convert.convert(small_checkpoints["legacy"], legacy_head=True, verify=False,
                             output=tmp / "unverified")
    assert result.passed is None and result.verification is None and result.exit_code == 0
