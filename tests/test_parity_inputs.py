"""`parity` bad input: one line naming the file, exit 2, no traceback; --blame and --strict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from convert import convert_checkpoint
from parity.cli import main
from parity.images import bundled_images
from tests.conftest import LEGACY_CFG, LEGACY_PTH, PLUS_PTH


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inputs") / "legacy"
    convert_checkpoint(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True, output=out, verify=False)
    return out


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for path in bundled_images()[:2]:
        shutil.copy(path, folder / path.name)
    return folder


def parity(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr.strip()


def assert_input_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


def test_missing_image_folder(folder, tmp_path):
    code, err = parity("check", LEGACY_PTH, folder, "--images", tmp_path / "none", "-q")
    assert_input_error(code, err, str(tmp_path / "none"), "no such image folder")


def test_empty_image_folder(folder, tmp_path):
    code, err = parity("check", LEGACY_PTH, folder, "--images", tmp_path, "-q")
    assert_input_error(code, err, str(tmp_path), "holds no images")


def test_unreadable_image_is_listed_or_fails_with_strict(folder, images, tmp_path):
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    report = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["check", str(LEGACY_PTH), str(folder), "--config",
                                       str(LEGACY_CFG), "--images", str(images), "--json",
                                       str(report), "-q"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["images"]["unreadable"] == ["broken.jpg"] and data["images"]["count"] == 2
    code, err = parity("check", LEGACY_PTH, folder, "--images", images, "--strict", "-q")
    assert_input_error(code, err, "broken.jpg", "cannot be decoded")


def test_model_json_naming_a_missing_blob(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    doc = json.loads((broken / "model.json").read_text())
    doc["model"]["modelOutputNodes"][1]["cls_pred"] = "no_such_blob"
    (broken / "model.json").write_text(json.dumps(doc))
    code, err = parity("check", LEGACY_PTH, broken, "--config", LEGACY_CFG, "-q")
    assert_input_error(code, err, "model.json", "no_such_blob", "model.param lacks")


def test_folder_of_another_checkpoint(folder):
    code, err = parity("check", PLUS_PTH, folder, "-q")
    assert_input_error(code, err, "manifest.json", "another architecture")


def test_folder_with_another_class_count(folder, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    doc = json.loads((other / "model.json").read_text())
    doc["numOfClass"], doc["className"] = 3, ["a", "b", "c"]
    (other / "model.json").write_text(json.dumps(doc))
    code, err = parity("check", LEGACY_PTH, other, "-q")
    assert_input_error(code, err, "model.json", "numOfClass 3", "80 classes")


def test_tolerance_file_with_unknown_key(folder, tmp_path):
    limits = tmp_path / "limits.toml"
    limits.write_text("[detections]\nmin_iou = 0.5\nmax_wobble = 3\n")
    code, err = parity("check", LEGACY_PTH, folder, "--tolerances", limits, "-q")
    assert_input_error(code, err, str(limits), "unknown key detections.max_wobble")
    limits.write_text("[stages.gpu.detections]\nmin_iou = 0.5\n")
    code, err = parity("check", LEGACY_PTH, folder, "--tolerances", limits, "-q")
    assert_input_error(code, err, "unknown key stages.gpu")


def test_tolerance_file_overrides_a_limit(folder, images, tmp_path):
    limits = tmp_path / "strict.toml"
    limits.write_text("[detections]\nmax_score_diff = 0.0\n[stages.ncnn.detections]\n"
                      "max_score_diff = 0.0\n")
    report = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["check", str(LEGACY_PTH), str(folder), "--config",
                                       str(LEGACY_CFG), "--images", str(images), "--tolerances",
                                       str(limits), "--json", str(report), "-q"])
    data = json.loads(report.read_text())
    limit = next(c for c in data["gate"]["checks"]
             if c["stage"] == "ncnn" and c["check"] == "detections.max_score_diff")
    assert limit["limit"] == 0.0
    assert result.exit_code == (0 if limit["passed"] else 1)


def test_bad_shard(folder):
    code, err = parity("check", LEGACY_PTH, folder, "--shard", "3/2", "-q")
    assert_input_error(code, err, "--shard")


def test_merge_refuses_reports_of_different_checks(folder, images, tmp_path):
    reports = []
    for name, config in (("a", LEGACY_CFG), ("b", None)):
        out = tmp_path / f"{name}.json"
        args = ["check", LEGACY_PTH, folder, "--images", images, "--json", out, "-q"]
        tolerances = tmp_path / "t.toml"
        tolerances.write_text("[detections]\nmin_iou = 0.5\n")
        if name == "b":
            args += ["--tolerances", tolerances]
        else:
            args += ["--config", config]
        parity(*args)
        reports.append(out)
    code, err = parity("merge", *reports, "-o", tmp_path / "m.json")
    assert_input_error(code, err, "b.json", "not a shard of the same check")


def test_blame_names_the_broken_layer(folder, images, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    param = (broken / "model.param").read_text().splitlines()
    index = next(i for i, line in enumerate(param)
                 if line.startswith("Convolution") and " 9=2" in line and i > len(param) // 2)
    param[index] = param[index].replace(" 9=2", " 9=1")  # LeakyReLU -> ReLU in one conv
    (broken / "model.param").write_text("\n".join(param) + "\n")
    layer_name = param[index].split()[1]
    report = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["check", str(LEGACY_PTH), str(broken), "--config",
                                       str(LEGACY_CFG), "--images", str(images), "--blame",
                                       "--json", str(report), "-q"])
    data = json.loads(report.read_text())
    assert result.exit_code == 1 and data["gate"]["blamed_stage"] == "ncnn"
    assert data["blame"]["first_departure"]["layer_name"] == layer_name


def test_image_with_odd_size_runs(folder, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    frame = cv2.imread(str(bundled_images()[1]))
    cv2.imwrite(str(odd / "portrait.png"), cv2.resize(frame, (300, 500)))
    code, err = parity("check", LEGACY_PTH, folder, "--config", LEGACY_CFG, "--images", odd,
                       "-q")
    assert code in (0, 1), err
