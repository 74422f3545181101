"""The HTML parity report: self-contained, complete, escaped, and it renders in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from convert import convert_checkpoint
from parity.check import CheckInputs, run_records
from parity.cli import main
from parity.gate import read_tolerances
from parity.html_report import log_bins, write_html
from parity.images import in_memory
from parity.report import build_report
from parity.report_types import BandValues, Report, StageFailed, StageRow
from parity.synthetic import default_frames
from tests.conftest import LEGACY_CFG, LEGACY_PTH

MAX_BYTES = 1_500_000  # 4 images at <= 640 px, JPEG quality 80, plus overlays and charts
JPEG_URI = "data:image/jpeg;base64,"


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[Report, dict[str, np.ndarray], Path]:
    """(report, frames, model folder) of nanodet-m on 4 bundled photos."""
    folder = tmp_path_factory.mktemp("html") / "m"
    convert_checkpoint(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True, output=folder,
                       verify=False)
    frames = default_frames(2)[:4]
    run = run_records(CheckInputs(LEGACY_PTH, folder, LEGACY_CFG), in_memory(frames))
    header = {"tool": {}, "checkpoint": {"file": "x", "sha256": "0"},
              "model_folder": {"path": "m"},
              "images": {"source": "bundled+synthetic:2", "count": 4, "unreadable": [],
                         "shard": None}}
    report = build_report(header, run.stages, run.records, read_tolerances(None))
    return report, dict(frames), folder


@pytest.fixture(scope="module")
def page(checked, tmp_path_factory) -> Path:
    report, frames, _ = checked
    path = tmp_path_factory.mktemp("page") / "report.html"
    write_html(report, path, frames)
    return path


def assert_self_contained(text: str) -> None:
    for external in ("http://", "https://", 'src="//', "href=\"//", "<script"):
        assert external not in text, external


def test_page_is_self_contained_and_complete(checked, page):
    report, _, _ = checked
    text = page.read_text()
    assert_self_contained(text)
    for stage in report.stages:
        assert stage.name in text and stage.colour in text
    for record in report.records:
        assert record.image in text
    assert "<svg" in text and 'class="hist"' in text
    assert text.count(JPEG_URI) == len(report.records)
    assert ("PASS" if report.gate.passed else "FAIL") in text
    assert page.stat().st_size < MAX_BYTES, page.stat().st_size


def test_embedded_frames_are_small_jpegs(page):
    import base64

    for data in re.findall(re.escape(JPEG_URI) + r"([A-Za-z0-9+/=]+)", page.read_text()):
        image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[1] <= 640


def test_frames_regenerated_from_the_source(checked, page, tmp_path):
    report, _, _ = checked
    again = tmp_path / "again.html"
    write_html(report, again, None)
    assert again.read_text().count(JPEG_URI) == len(report.records)

    missing = replace(report, images=replace(report.images,
                                             source=str(tmp_path / "no-such-folder")))
    blank = tmp_path / "blank.html"
    write_html(missing, blank, None)
    text = blank.read_text()
    assert JPEG_URI not in text
    assert text.count("image not found") >= len(report.records)
    assert text.count('class="ref"') == len(report.records)  # boxes still drawn


def test_text_is_escaped_and_marks_are_drawn(checked, tmp_path):
    report, frames, _ = checked
    evil = StageRow(name="<b>evil</b>", layout="legacy", status="skipped",
                    reason='a "quoted" <reason> & more', order=99, reference=False,
                    compared_with=[], checks=[], colour='#000000"><i>colour</i>')
    record, second = report.records[:2]
    stage = next(s.name for s in report.stages[1:] if s.name in record.stages)
    entry = record.stages[stage]
    match = replace(entry.match, extra=[*entry.match.extra, len(entry.detections)],
                    missing=[*entry.match.missing, 0] if record.reference else entry.match.missing)
    entry = replace(entry, detections=[*entry.detections, (1.0, 2.0, 50.0, 60.0, 0.9, 7)],
                    match=match)
    records = [replace(record, stages={**record.stages, stage: entry}),
               replace(second, stages={**second.stages,
                                       stage: StageFailed(error="RuntimeError: <boom>")}),
               *report.records[2:]]
    hostile = replace(report, checkpoint=replace(report.checkpoint,
                                                 file="<script>alert(1)</script>.pth"),
                      stages=[*report.stages, evil], records=records)
    path = tmp_path / "hostile.html"
    write_html(hostile, path, frames)
    text = path.read_text()
    assert_self_contained(text)
    assert "<b>evil</b>" not in text and "&lt;b&gt;evil&lt;/b&gt;" in text
    assert "<i>colour</i>" not in text
    assert "&lt;script&gt;" in text and "&lt;boom&gt;" in text
    assert f"+ extra {stage}" in text
    assert 'class="extra b-firmware"' in text
    if record.reference:
        assert f"✕ missing {stage}" in text


def test_log_bins():
    bins = log_bins([0, 1e-7, 1e-6, 5e-6, 0.05, 0.99, 1.0, "inf", "nan"], -6, 0)
    assert len(bins) == 1 + 12
    assert bins[0] == 2  # zero and below 1e-6
    assert bins[1] == 1 and bins[2] == 1  # [1e-6, 10^-5.5), [10^-5.5, 1e-5)
    assert bins[-1] == 4  # 0.99, and 1, inf, nan clipped into the last bin
    assert sum(bins) == 9


def test_cli_check_writes_html(checked, tmp_path):
    _, _, folder = checked
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(main, ["check", str(LEGACY_PTH), str(folder), "--config",
                                       str(LEGACY_CFG), "--synthetic", "2", "--html", str(out),
                                       "-q"])
    assert result.exit_code in (0, 1), result.output
    text = out.read_text()
    assert_self_contained(text)
    assert text.count(JPEG_URI) == 7  # 5 bundled photos + 2 synthetic frames
    assert "synthetic-0-001-mosaic" in text


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def test_renders_in_headless_chromium(checked, page, tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("no chromium: `apt-get install -y chromium` to render the page headless")
    report, _, _ = checked
    shot = tmp_path / "shot.png"
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
               "--window-size=1280,2000", page.resolve().as_uri()]
    subprocess.run(command, capture_output=True, timeout=180, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2000, 1280)
    assert image.std() > 20, "blank screenshot"
    banner = (0x2e, 0x7d, 0x32) if report.gate.passed else (0xc6, 0x28, 0x28)
    assert pixels_near(image, banner) > 500, "verdict banner not rendered"
    overlays = [s.colour for s in report.stages if s.ran]
    assert max(pixels_near(image, hex_rgb(c)) for c in overlays) > 50, "no stage boxes drawn"


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def pixels_near(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 24) -> int:
    target = np.array(rgb[::-1], np.int32)
    return int((np.abs(image.astype(np.int32) - target).sum(axis=2) < tolerance).sum())


def test_iou_is_drawn_as_one_minus_iou():
    """Perfect matches (IoU 1) land in the ≈0 bin, not beyond the limit in red."""
    from parity.html_report import band_charts

    limits = read_tolerances(None).detections
    assert (limits.min_iou, limits.max_score_diff, limits.max_edge_px) == (0.9, 0.02, 8.0)
    perfect = band_charts(BandValues(iou=[1.0] * 3, score_diff=[0.0], edge_px=[0.0]),
                          "firmware", limits, "#123456")
    assert "#d62728" not in perfect
    shifted = band_charts(BandValues(iou=[0.5] * 3, score_diff=[0.0], edge_px=[0.0]),
                          "firmware", limits, "#123456")
    assert 'fill="#d62728"' in shifted
