"""Tests for parity/targets/: the registry, what each target answers, the one ArduinoJson
pool model, and a target added inside a test (one module's worth of code + one line)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.errors import InputError
from convert.package import (
    check_firmware_json,
    firmware_json,
    firmware_json_problem,
    write_firmware_json,
)
from parity.detect import legacy_layout_detections
from parity.model_folder import read_model_folder
from parity.targets import (
    TARGETS,
    Device,
    JsonLineFormat,
    Normalisation,
    Target,
    register_target,
    target_named,
)
from parity.targets.base import LEGACY_NANODET_BLOBS
from parity.unitv2.arduinojson import SLOT_BYTES, MemoryPool, parse_usage
from parity.unitv2.decode import FirmwareObject
from parity.unitv2.model_json import ModelJsonFormat

UNITV2 = target_named("unitv2")
NCNN_LATEST = target_named("ncnn-latest")
COCO_CONFIG = Path("/work/shared/nanodet-configs/nanodet-plus-m_416.yml")
F32 = np.float32


# --------------------------------------------------------------------------- registry


def test_registry_holds_the_built_in_targets():
    assert list(TARGETS) == ["unitv2", "ncnn-latest"]
    assert TARGETS["unitv2"] is UNITV2 and TARGETS["ncnn-latest"] is NCNN_LATEST


def test_unknown_target_is_an_input_error_listing_the_known_ones():
    with pytest.raises(InputError) as caught:
        target_named("esp32")
    assert str(caught.value.where) == "--target"
    assert caught.value.problem == "'esp32': choose unitv2 or ncnn-latest"
    with pytest.raises(InputError, match="choose"):
        target_named(["unitv2"], "manifest.json")  # an unhashable value from a JSON file


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_target(replace(UNITV2, description="another"))
    assert TARGETS["unitv2"] is UNITV2


# --------------------------------------------------------------------------- answers


def test_unitv2_answers_with_the_firmware_numbers():
    device = UNITV2.device
    assert UNITV2.ncnn_tables == ("ncnn-20210222", "ncnn-20201208")
    assert UNITV2.blobs.input == "input.1"
    assert UNITV2.blobs.level_outputs() == [
        ("cls_pred_stride_8", "dis_pred_stride_8"), ("cls_pred_stride_16", "dis_pred_stride_16"),
        ("cls_pred_stride_32", "dis_pred_stride_32")]
    assert device.frame_size == (640, 480) and device.net_long_side == 320
    assert UNITV2.net_size == device.net_size == (320, 256)
    assert (device.score_threshold, device.nms_iou, device.strides) == (0.4, 0.5, (8, 16, 32))
    assert device.normalisation.mean_bgr == (103.53, 116.28, 123.675)
    assert device.json_line_format == JsonLineFormat(16384, "Object Recognition", "\r\n")
    assert UNITV2.model_json == ModelJsonFormat(levels=3, pool_bytes=8192)


def test_ncnn_latest_has_no_device_and_reads_the_same_layout():
    assert NCNN_LATEST.device is None
    assert NCNN_LATEST.ncnn_tables == ("ncnn-latest",)
    assert NCNN_LATEST.blobs == UNITV2.blobs and NCNN_LATEST.model_json == UNITV2.model_json
    assert NCNN_LATEST.normalisation == UNITV2.normalisation
    assert NCNN_LATEST.net_size == UNITV2.net_size


def test_tables_load_by_name():
    pytest.importorskip("parity.ncnn_tables")
    for target in (UNITV2, NCNN_LATEST):
        assert [t.name for t in target.tables] == list(target.ncnn_tables)


# --------------------------------------------------------------------------- one pool model


def test_parse_usage_counts_slots_and_deduplicated_copies():
    # 3 members + 2 elements = 5 slots; keys "a", "b", "c" (2 bytes each); strings "xy"
    # (3 bytes, once: the second copy is deduplicated) and "z" (2)
    doc = {"a": ["xy", "xy"], "b": "z", "c": 7}
    assert parse_usage(doc) == 5 * SLOT_BYTES + 3 * 2 + 3 + 2
    assert parse_usage({"a": ["xy", "xw"], "b": "z", "c": 7}) == parse_usage(doc) + 3


def test_a_duplicate_string_still_needs_room_while_parsed():
    # deserializeJson writes a string into the free zone before finding its twin
    pool = MemoryPool(capacity=10)
    assert pool.parse_string(b"abcd") and pool.used == 5
    assert pool.parse_string(b"abcd") and pool.used == 5  # 5 free: room for the copy
    assert not pool.parse_string(b"abcdefgh")
    full = MemoryPool(capacity=9)
    assert full.parse_string(b"abcd") and not full.parse_string(b"abcd")
    # a value the firmware copies (saveString) finds its twin first: no room needed
    assert full.copy_string(b"abcd")


def test_json_line_and_model_json_share_the_pool_model():
    # the JSON line stops where the pool model says 16384 bytes are used up
    objects = [FirmwareObject(prob=0.75, x=1, y=2, w=3, h=4, label=0)] * 96
    line = UNITV2.device.json_line(objects, ["person"])
    per_object = 7 * SLOT_BYTES
    used = 2 * SLOT_BYTES + 96 * per_object + len(b"person\0") + SLOT_BYTES + 19
    assert used <= 16384 < used + per_object and line.endswith('"Object Recognition"}')
    # model.json is sized by the same slots and strings
    doc = firmware_json(["a", "b", "c"], UNITV2.blobs.outputs())
    assert UNITV2.model_json.parse_bytes(doc) == parse_usage(doc)


def _coco_names() -> list[str]:
    if not COCO_CONFIG.is_file():
        pytest.skip(f"{COCO_CONFIG} absent")
    return yaml.safe_load(COCO_CONFIG.read_text())["class_names"]


def test_coco_model_json_fits_and_long_names_do_not():
    outputs = UNITV2.blobs.outputs()
    names = _coco_names()
    assert len(names) == 80 and firmware_json_problem(names, outputs) is None
    assert UNITV2.model_json.parse_bytes(firmware_json(names, outputs)) == 3167
    long_names = [c * 3000 for c in "xyz"]
    problem = firmware_json_problem(long_names, outputs)
    assert problem and "into 8192: shorten the class names" in problem
    with pytest.raises(InputError, match="shorten the class names"):
        check_firmware_json("names.txt", long_names, outputs)
    # ArduinoJson keeps one copy of equal strings: three equal long names fit
    assert firmware_json_problem(["x" * 3000] * 3, outputs) is None


# --------------------------------------------------------------------------- a new target


TOY_DEVICE = Device(
    name="Toy camera",
    frame_size=(800, 600),
    net_long_side=416,
    normalisation=Normalisation(mean_bgr=(0.0, 0.0, 0.0), norm_bgr=(1.0, 1.0, 1.0)),
    strides=(8, 16, 32),
    score_threshold=0.6,
    nms_iou=0.3,
    json_line_format=JsonLineFormat(pool_bytes=4096, running_name="Toy", terminator="\n"),
)
TOY = Target(name="toy", description="a camera made up for this test", ncnn_tables=(),
             blobs=LEGACY_NANODET_BLOBS, net_size=TOY_DEVICE.net_size,
             normalisation=TOY_DEVICE.normalisation,
             model_json=ModelJsonFormat(levels=3, pool_bytes=2048), device=TOY_DEVICE)


@pytest.fixture()
def toy() -> Iterator[Target]:
    register_target(TOY)  # the one registry line a new target module adds
    try:
        yield TOY
    finally:
        del TARGETS[TOY.name]


def _folder(path: Path, target: str, class_names: list[str]) -> Path:
    path.mkdir()
    for name in ("model.param", "model.bin"):
        (path / name).write_bytes(b"")
    manifest = {"layout": "legacy", "input": {"name": "input.1", "width": 416, "height": 320},
                "outputs": LEGACY_NANODET_BLOBS.outputs(),
                "architecture": {"backbone": {}, "neck": {}, "head": {},
                                 "class_names": class_names},
                "rewrite": {"strategy": "none"}, "target": target}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_new_target_is_known_only_once_registered(tmp_path):
    folder = _folder(tmp_path / "toy", "toy", ["a"])
    with pytest.raises(InputError, match="target: must be one of unitv2, ncnn-latest"):
        read_model_folder(folder)
    with pytest.raises(InputError, match="choose unitv2 or ncnn-latest"):
        target_named("toy")


def test_new_target_model_json_writer_and_reader_use_its_pool(toy, tmp_path):
    assert toy.net_size == (416, 320)  # 800x600 -> 416x312, padded to a multiple of 32
    names = [f"class {i:03d} " + "n" * 20 for i in range(60)]  # ~3.3 KB: 8192 yes, 2048 no
    outputs = toy.blobs.outputs()
    assert firmware_json_problem(names, outputs, UNITV2) is None
    assert "into 2048" in firmware_json_problem(names, outputs, toy)
    folder = _folder(tmp_path / "toy", "toy", ["a", "b"])
    with pytest.raises(InputError, match="for the Toy camera \\(target toy, legacy layout\\)"):
        read_model_folder(folder)  # a device target needs its model.json
    write_firmware_json(folder, ["a", "b"], outputs, toy)
    read = read_model_folder(folder)
    assert read.target is toy and read.class_names == ["a", "b"]
    assert read.output_names == outputs
    doc = json.loads((folder / "model.json").read_text())
    doc["numOfClass"], doc["className"] = 60, names
    (folder / "model.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="firmware reads it into 2048"):
        read_model_folder(folder)
    other = _folder(tmp_path / "unitv2", "unitv2", ["a"])
    (other / "model.json").write_text(json.dumps(doc))
    assert read_model_folder(other).class_names == names  # the UnitV2's 8192 hold them


def _one_cell_levels(box, prob: float):
    """Legacy outputs with one peaked cell: stride 16, row 5, col 7, l t r b = 2 1 3 4 bins."""
    cls, dis = [], []
    for stride in TOY_DEVICE.strides:
        cells = (box.net_h // stride) * (box.net_w // stride)
        cls.append(np.zeros((cells, 2), F32))
        dis.append(np.zeros((cells, 32), F32))
    row = 5 * (box.net_w // 16) + 7
    cls[1][row, 1] = prob
    logits = np.zeros((4, 8), F32)
    for side, peak in enumerate((2, 1, 3, 4)):
        logits[side, peak] = 50.0
    dis[1][row] = logits.reshape(-1)
    return cls, dis


def test_new_target_decode_and_json_line_use_its_numbers(toy):
    device = toy.device
    box = device.letterbox()
    assert (box.frame_w, box.frame_h, box.net_w, box.net_h) == (800, 600, 416, 320)
    assert (box.resized_w, box.resized_h, box.pad_top) == (416, 312, 4)
    cls, dis = _one_cell_levels(box, prob=0.5)
    assert device.decode(cls, dis, box) == []  # under the toy's 0.6
    assert len(UNITV2.device.decode(cls, dis, box)) == 1  # over the UnitV2's 0.4
    cls, dis = _one_cell_levels(box, prob=0.75)
    (shown,) = device.decode(cls, dis, box)
    # centre (120, 88), net box (88, 72, 168, 152); frame = (v - pad) / (416 / 800)
    scale = F32(416) / F32(800)
    expected = [float(F32(v) / scale) for v in (88, 72 - 4, 168, 152 - 4)]
    assert [shown.x1, shown.y1, shown.x2, shown.y2] == expected and shown.label == 1
    outputs = {n: a for names, arrays in ((toy.blobs.outputs()[0::2], cls),
                                          (toy.blobs.outputs()[1::2], dis))
               for n, a in zip(names, arrays)}
    found = legacy_layout_detections(outputs, toy.blobs.outputs(), box, device=device)
    assert found.boxes.tolist() == [expected]
    line = device.json_line([shown], ["a", "b"])
    assert json.loads(line)["running"] == "Toy" and json.loads(line)["obj"][0]["type"] == "b"


def test_new_target_preprocessing_uses_its_normalisation(toy):
    frame = np.full((600, 800, 3), 200, np.uint8)
    tensor = toy.device.preprocess(frame, toy.device.letterbox())
    assert tensor.shape == (1, 3, 320, 416)
    assert tensor[0, :, 4:316].min() == tensor[0, :, 4:316].max() == 200.0  # norm 1, mean 0
    assert tensor[0, :, :4].max() == 0.0  # the pad
