"""`parity.blame`: the first NCNN layer departing from the ONNX model, by comparing every blob."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from convert import convert_checkpoint
from parity.blame import BlameResult, blame_ncnn_against_onnx
from parity.ncnn_param import Param
from parity.preprocess import frame_to_tensor
from tests.conftest import IMAGES, LEGACY_CFG, LEGACY_PTH

WEIGHT_LAYERS = {"Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise"}


@pytest.fixture(scope="module")
def legacy_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blame") / "legacy"
    convert_checkpoint(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True, output=out,
                       fp16=False, verify=False)
    return out


@pytest.fixture(scope="module")
def feed(legacy_folder) -> np.ndarray:
    manifest = json.loads((legacy_folder / "manifest.json").read_text())
    image = cv2.imread(str(IMAGES / "chelsea.jpg"))
    assert image is not None
    return frame_to_tensor(image, manifest["input"]["width"], manifest["input"]["height"])[0]


def _blame(folder: Path, feed: np.ndarray, param: Path | None = None, weights: Path | None = None,
           **tolerances) -> BlameResult:
    return blame_ncnn_against_onnx(folder / "model.sim.onnx", param or folder / "model.param",
                                   weights or folder / "model.bin", "input.1", feed, **tolerances)


def _middle_activated_conv(param: Param) -> int:
    """Index of the middle Convolution with a fused LeakyReLU (9=2)."""
    convs = [i for i, layer in enumerate(param.layers)
             if layer.type == "Convolution" and layer.get(9) == "2"]
    assert len(convs) > 10
    return convs[len(convs) // 2]


def test_clean_conversion_has_no_departure(legacy_folder, feed):
    result = _blame(legacy_folder, feed)
    assert result.first_departure is None, str(result.first_departure)
    total = result.layers_checked + result.layers_unmatched
    assert result.layers_checked >= 100
    assert result.layers_checked / total >= 0.9
    assert result.worst and all(not b.departs for b in result.worst)
    assert all(b.onnx_tensor for b in result.worst)
    report = result.to_dict()
    assert report["first_departure"] is None
    json.dumps(report)


def test_changed_activation_is_blamed(legacy_folder, feed, tmp_path):
    param = Param.read(legacy_folder / "model.param")
    index = _middle_activated_conv(param)
    layer = param.layers[index]
    layer.set(9, "1")  # ReLU where the model has LeakyReLU(0.1): still loads, computes otherwise
    param.write(tmp_path / "model.param")

    result = _blame(legacy_folder, feed, param=tmp_path / "model.param")
    departure = result.first_departure
    assert departure is not None
    assert (departure.index, departure.layer_name, departure.blob) == (
        index, layer.name, layer.tops[0])
    assert departure.departs and departure.max_abs > departure.tolerance
    assert layer.name in str(departure)
    assert result.to_dict()["first_departure"]["layer_name"] == layer.name


def test_corrupted_weights_are_blamed(legacy_folder, feed, tmp_path):
    """Flip the sign of one middle convolution's weights inside model.bin."""
    param = Param.read(legacy_folder / "model.param")
    index = _middle_activated_conv(param)
    data = bytearray((legacy_folder / "model.bin").read_bytes())
    offset = 0
    for layer in param.layers[:index]:
        if layer.type in WEIGHT_LAYERS:
            offset += 4 + 4 * int(layer.get(6)) + (4 * int(layer.get(0)) if layer.get(5) == "1"
                                                    else 0)
        else:
            assert layer.type not in {"MemoryData", "BatchNorm", "InnerProduct", "Scale"}
    assert struct.unpack_from("<I", data, offset)[0] == 0  # fp32 weights follow a zero tag
    count = int(param.layers[index].get(6))
    weights = np.frombuffer(data, np.float32, count, offset + 4).copy()
    data[offset + 4:offset + 4 + 4 * count] = (-weights).tobytes()
    shutil.copy(legacy_folder / "model.param", tmp_path / "model.param")
    (tmp_path / "model.bin").write_bytes(bytes(data))

    result = _blame(legacy_folder, feed, param=tmp_path / "model.param",
                    weights=tmp_path / "model.bin")
    departure = result.first_departure
    assert departure is not None
    assert departure.index == index
    assert departure.layer_name == param.layers[index].name
    assert result.worst[0].departs


def test_transposed_output_is_blamed(legacy_folder, feed, tmp_path):
    """An output in the wrong layout departs even though its values are all there."""
    param = Param.read(legacy_folder / "model.param")
    [layer] = [layer for layer in param.layers if "cls_pred_stride_16" in layer.tops]
    assert layer.type == "Permute"
    layer.set(0, "0")  # keep [80, cells] instead of the firmware's [cells, 80]
    param.write(tmp_path / "model.param")
    departure = _blame(legacy_folder, feed, param=tmp_path / "model.param").first_departure
    assert departure is not None
    assert (departure.layer_name, departure.onnx_tensor) == (layer.name, "cls_pred_stride_16")


def test_huge_tolerance_accepts_everything(legacy_folder, feed, tmp_path):
    param = Param.read(legacy_folder / "model.param")
    param.layers[_middle_activated_conv(param)].set(9, "1")
    param.write(tmp_path / "model.param")
    result = _blame(legacy_folder, feed, param=tmp_path / "model.param", atol=1e6, rtol=0.0)
    assert result.first_departure is None
    assert not any(b.departs for b in result.worst)
