"""Verdict profiles: [profiles.<name>] of the tolerances, chosen by name; and the in-process
check a converter can run on its staging folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from common.errors import InputError
from convert import convert_checkpoint
from parity.cli import main
from parity.folder_check import check_folder
from parity.gate import default_tolerances, load_tolerances
from parity.synthetic import default_frames
from tests.report_validation import assert_valid_report

# convert's verification limits (convert/verify.py), which the verify profile states again
VERIFY_DETECTIONS = {"min_iou": 0.95, "max_score_diff": 0.01, "min_matched_fraction": 0.99,
                     "max_extra": 0}


def test_the_verify_profile_holds_the_limits_of_convert_verification():
    verify = load_tolerances(None, "verify")
    defaults = default_tolerances()
    assert {k: verify["detections"][k] for k in VERIFY_DETECTIONS} == VERIFY_DETECTIONS
    assert verify["detections"]["min_ap50"] == defaults["detections"]["min_ap50"]
    assert verify["tensors"] == defaults["tensors"] and verify["stages"] == defaults["stages"]
    assert "profiles" not in verify and "profiles" not in defaults
    assert load_tolerances(None) == defaults


def test_a_file_overrides_the_profile_and_may_add_to_it(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text("[detections]\nmin_iou = 0.8\n[profiles.verify.detections]\n"
                    "max_extra = 3\n[profiles.mine.tensors]\nmax_abs = 0.5\n")
    verify = load_tolerances(path, "verify")
    assert verify["detections"]["min_iou"] == 0.8  # the file's top level over the profile
    assert verify["detections"]["max_extra"] == 3  # the file's own profile last
    assert verify["detections"]["max_score_diff"] == 0.01
    assert load_tolerances(path, "mine")["tensors"]["max_abs"] == 0.5
    plain = load_tolerances(path)
    assert plain["detections"]["max_extra"] == 0 and plain["tensors"]["max_abs"] == 0.1


@pytest.mark.parametrize("text, profile, phrase", [
    ("", "strict", "no profile 'strict' (known: verify)"),
    ("[profiles.verify.detections]\nmin_iou = 2\n", "verify",
     "profiles.verify.detections.min_iou = 2: must lie in [0, 1]"),
    ("[profiles.verify]\nextra = 1\n", None, "unknown key profiles.verify.extra"),
    ("[profiles]\nverify = 1\n", None, "profiles.verify must be a table"),
], ids=["unknown", "out-of-range", "unknown-key", "not-a-table"])
def test_profiles_are_checked(tmp_path, text, profile, phrase):
    path = tmp_path / "limits.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=phrase.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        load_tolerances(path, profile)


@pytest.fixture(scope="module")
def folder(small_checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profiles") / "legacy"
    convert_checkpoint(small_checkpoints["legacy"], output=out, verify=False, legacy_head=True)
    return out


def test_check_folder_runs_the_verify_profile_in_process(small_checkpoints, folder):
    frames = default_frames(2)[-2:]
    found = check_folder(small_checkpoints["legacy"], folder, frames, only={"ncnn"})
    report = found.as_json()
    assert_valid_report(report)
    assert report["images"] == {"source": "in-memory", "count": 2, "unreadable": [],
                                "skipped": {}, "shard": None}
    assert [s["name"] for s in report["stages"] if s["status"] == "ran"] == ["torch", "ncnn"]
    assert report["tolerances"]["detections"]["min_iou"] == 0.95
    iou = next(c for c in report["gate"]["checks"] if c["check"] == "detections.min_iou")
    assert iou["limit"] == 0.95
    assert found.passed == report["gate"]["passed"]
    assert found.passed == all(c["passed"] for c in report["gate"]["checks"])


def test_check_folder_refuses_frames_that_are_no_photos(small_checkpoints, folder):
    import numpy as np

    with pytest.raises(InputError, match="no usable image"):
        check_folder(small_checkpoints["legacy"], folder, [("flat.png", np.zeros((2, 2, 3),
                                                                               np.uint8))])


def test_the_profile_option_selects_the_profile(small_checkpoints, folder, tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["check", str(small_checkpoints["legacy"]), str(folder),
                                       "--synthetic", "1", "--profile", "verify", "-q",
                                       "--json", str(out)])
    assert result.exit_code in (0, 1), result.stderr
    import json

    written = json.loads(out.read_text())
    assert_valid_report(written)
    limits = written["tolerances"]["detections"]
    assert {k: limits[k] for k in VERIFY_DETECTIONS} == VERIFY_DETECTIONS
