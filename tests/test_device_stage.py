"""When the device stage runs: a folder made for another target at another input size."""

from __future__ import annotations

from tests.conftest import LEGACY_CFG, LEGACY_PTH
from tests.test_parity import check, convert_with


def test_a_legacy_folder_for_ncnn_latest_at_another_size_skips_the_device(tmp_path):
    """No UnitV2 could feed it, so the firmware emulation is skipped with the reason
    (it used to fail on every image in the decode)."""
    folder = convert_with(tmp_path, "latest-320x320", LEGACY_PTH, LEGACY_CFG, legacy_head=True,
                          target="ncnn-latest", input_size=(320, 320))
    code, report, err = check(tmp_path, LEGACY_PTH, folder, LEGACY_CFG)
    assert code == 0, err
    device = next(s for s in report["stages"] if s["name"] == "device")
    assert device["status"] == "skipped"
    assert device["reason"] == ("made for ncnn-latest at 320x320; the UnitV2 firmware feeds "
                                "320x256")


def test_a_unitv2_folder_at_another_size_still_runs_and_fails_the_device(tmp_path):
    folder = convert_with(tmp_path, "unitv2-320x320", LEGACY_PTH, LEGACY_CFG, legacy_head=True,
                          input_size=(320, 320))
    code, report, err = check(tmp_path, LEGACY_PTH, folder, LEGACY_CFG)
    assert code == 1, err
    assert report["gate"]["blamed_stage"] == "device"
