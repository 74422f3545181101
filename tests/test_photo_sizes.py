"""Photos of any size become the UnitV2's 640x480 camera frame before any stage sees them.

A clean conversion of both real checkpoints passes `parity check` on real
photos of several sizes and aspects; the device stage prints what the firmware
prints for the 640x480 frame; degenerate and oversized photos are skipped
with their reason, never a FAIL.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from convert import convert_checkpoint
from parity.cli import main
from parity.images import (
    MAX_IMAGE_PIXELS,
    InMemoryPhoto,
    PhotoFile,
    UnusableImage,
    camera_frame,
    crop_box,
)
from parity.model_folder import read_model_folder
from parity.runners.ncnn_runner import NcnnRunner
from parity.targets.unitv2 import DEVICE
from tests.conftest import LEGACY_CFG, LEGACY_PTH, PLUS_CFG, PLUS_PTH, photo
from tests.report_validation import assert_valid_report

pytestmark = pytest.mark.slow

# name -> (source photo, width, height): other sizes and aspects of real photos
SIZES = {"square-512.png": ("astronaut", 512, 512), "portrait-480x640.jpg": ("chelsea", 480, 640),
         "hd-1280x720.jpg": ("motorcycle_left", 1280, 720),
         "photo-3x2-900x600.jpg": ("coffee", 900, 600), "tiny-96x72.png": ("rocket", 96, 72)}
DEGENERATE = {"one-pixel.png": (1, 1), "eight-by-six.png": (8, 6)}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): what a bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sizes")
    for name, (source, width, height) in SIZES.items():
        cv2.imwrite(str(folder / name), cv2.resize(photo(source), (width, height),
                                                   interpolation=cv2.INTER_AREA))
    for name, (width, height) in DEGENERATE.items():
        cv2.imwrite(str(folder / name), np.full((height, width, 3), 128, np.uint8))
    (folder / "bomb-60000x60000.png").write_bytes(png_header_only(60000, 60000))
    return folder


@pytest.fixture(scope="module", params=["plus", "legacy"])
def converted(request, tmp_path_factory) -> tuple[Path, Path, Path]:
    checkpoint, config = (PLUS_PTH, PLUS_CFG) if request.param == "plus" \
        else (LEGACY_PTH, LEGACY_CFG)
    out = tmp_path_factory.mktemp(request.param) / "unitv2"
    convert_checkpoint(checkpoint, config=config, legacy_head=True, output=out, verify=False)
    return checkpoint, config, out


def check(checkpoint: Path, config: Path, folder: Path, images: Path, report: Path) -> dict:
    result = CliRunner().invoke(main, ["check", str(checkpoint), str(folder), "--config",
                                       str(config), "--images", str(images), "--json",
                                       str(report), "-q"])
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(report.read_text())
    assert_valid_report(data)
    return data


def firmware_lines(folder: Path, frame: np.ndarray) -> list[str]:
    """What the firmware prints for a 640x480 frame, computed here from its pieces."""
    model = read_model_folder(folder)
    names = model.output_names
    box = DEVICE.letterbox(frame.shape[1], frame.shape[0])
    feed = np.array(DEVICE.preprocess_ncnn(frame, box), copy=True)[None]
    outputs = NcnnRunner(model.param, model.bin, model.input_name, names).infer(feed)
    shown = DEVICE.decode([outputs[n] for n in names[0::2]], [outputs[n] for n in names[1::2]],
                          box)
    line = DEVICE.json_line(shown, model.class_names)
    return [line] if line is not None else []


def test_real_photos_of_any_size_pass_and_the_device_prints_the_frame(
        converted, photo_folder, tmp_path):
    checkpoint, config, folder = converted
    report = check(checkpoint, config, folder, photo_folder, tmp_path / "sizes.json")
    assert report["gate"]["passed"], report["gate"]["failing_stages"]
    records = {r["image"]: r for r in report["records"]}
    assert sorted(records) == sorted(SIZES)
    skipped = report["images"]["skipped"]
    assert sorted(skipped) == sorted([*DEGENERATE, "bomb-60000x60000.png"])
    assert "too small" in skipped["one-pixel.png"]
    assert f"{MAX_IMAGE_PIXELS:,}" in skipped["bomb-60000x60000.png"]
    frames = tmp_path / "frames"
    frames.mkdir()
    lines = 0
    for name, (_, width, height) in SIZES.items():
        record = records[name]
        assert record["original_size"] == [width, height]
        assert record["frame_size"] == [640, 480]
        frame = PhotoFile(photo_folder / name).load().frame
        device = record["stages"]["device"]
        assert device["json_lines"] == firmware_lines(folder, frame), name
        for line in device["json_lines"]:
            for obj in json.loads(line)["obj"]:
                assert 0 <= obj["x"] <= obj["x"] + obj["w"] <= 640, (name, obj)
                assert 0 <= obj["y"] <= obj["y"] + obj["h"] <= 480, (name, obj)
        lines += len(device["json_lines"])
        cv2.imwrite(str(frames / (Path(name).stem + ".png")), frame)  # lossless
    assert lines >= 3  # the photos hold people, a cat, a motorcycle: the device saw them
    as_frames = check(checkpoint, config, folder, frames, tmp_path / "frames.json")
    by_stem = {Path(r["image"]).stem: r for r in as_frames["records"]}
    for name, record in records.items():
        again = by_stem[Path(name).stem]
        assert again["frame_sha256"] == record["frame_sha256"]
        assert again["stages"]["device"]["json_lines"] == record["stages"]["device"]["json_lines"]


@pytest.mark.parametrize("width,height", [(640, 480), (1280, 720), (480, 640), (512, 512),
                                          (641, 481), (64, 48), (5000, 100)])
def test_camera_frame_is_a_centred_4_3_crop(width, height):
    rng = np.random.default_rng(width * height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if crop_box(width, height)[2] < 64:
        with pytest.raises(UnusableImage, match="too small"):
            camera_frame(image)
        return
    frame = camera_frame(image)
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    x, y, w, h = crop_box(width, height)
    assert abs(w * 480 - h * 640) <= 640  # 4:3 up to rounding
    assert x == (width - w) // 2 and y == (height - h) // 2
    if (width, height) == (640, 480):
        assert frame is image


def test_a_frame_keeps_the_centre_of_the_photo():
    """A marker in the middle of a wide photo lands in the middle of the frame."""
    image = np.zeros((720, 1280, 3), np.uint8)
    image[340:380, 620:660] = 255
    frame = camera_frame(image)
    ys, xs = np.nonzero(frame[:, :, 0] > 127)
    assert abs(xs.mean() - 320) < 2 and abs(ys.mean() - 240) < 2


def test_in_memory_photo_must_be_bgr_uint8():
    with pytest.raises(UnusableImage, match="BGR uint8"):
        InMemoryPhoto("grey", np.zeros((480, 640), np.uint8)).load()


def test_convert_verifies_on_camera_frames_of_photos_of_any_size(tmp_path):
    """`convert`'s verification images become camera frames too; degenerate ones are listed."""
    frames = [(name, cv2.resize(photo(source), (width, height), interpolation=cv2.INTER_AREA))
              for name, (source, width, height) in SIZES.items()]
    frames.append(("eight-by-six", np.full((6, 8, 3), 128, np.uint8)))
    result = convert_checkpoint(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True,
                                output=tmp_path / "out", frames=frames)
    check = result.verification
    assert check.passed and check.images == len(SIZES), check.summary()
    assert check.reference_detections >= 3
    assert list(check.skipped) == ["eight-by-six"] and "too small" in check.skipped["eight-by-six"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["verification"]["skipped"] == check.skipped
