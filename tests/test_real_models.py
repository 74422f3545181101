"""The rebuilt architectures reproduce the public NCNN models they were trained as."""

from __future__ import annotations

import ncnn
import numpy as np
import pytest
import torch

from heads.decode import levels_from_logits, native_decode
from heads.loader import load_detector
from tests.conftest import (
    LEGACY_CFG,
    LEGACY_PTH,
    PLUS_CFG,
    PLUS_PTH,
    REFERENCE_NCNN,
    photo,
    plain_tensor,
)

LEGACY_BLOBS = ["792", "795", "814", "817", "836", "839"]  # cls, dis per stride 8/16/32


def run_reference(stem: str, input_name: str, outputs: list[str], tensor: torch.Tensor):
    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(REFERENCE_NCNN / f"{stem}.param")) == 0
    assert net.load_model(str(REFERENCE_NCNN / f"{stem}.bin")) == 0
    array = tensor[0].numpy().copy()  # ncnn.Mat borrows this memory: keep it alive
    ex = net.create_extractor()
    ex.input(input_name, ncnn.Mat(array))
    return [np.array(ex.extract(name)[1]) for name in outputs]


@pytest.mark.parametrize("image", ["chelsea", "astronaut", "coffee"])
def test_legacy_matches_reference_ncnn(image):
    loaded = load_detector(LEGACY_PTH, LEGACY_CFG)
    tensor = plain_tensor(photo(image), 320, 320)
    levels = levels_from_logits(loaded.model(tensor), loaded.spec.head.strides)
    reference = run_reference("nanodet_m", "input.1", LEGACY_BLOBS, tensor)
    for i, level in enumerate(levels):
        assert np.abs(reference[2 * i] - level.cls).max() <= 2e-3
        assert np.abs(reference[2 * i + 1] - level.dis).max() <= 2e-3


@pytest.mark.parametrize("image", ["chelsea", "astronaut", "coffee"])
def test_plus_matches_reference_ncnn(image):
    loaded = load_detector(PLUS_PTH, PLUS_CFG)
    tensor = plain_tensor(photo(image), 416, 416)
    levels = levels_from_logits(loaded.model(tensor), loaded.spec.head.strides)
    ours = np.concatenate([np.concatenate([lv.cls, lv.dis], 1) for lv in levels])
    (reference,) = run_reference("nanodet-plus-m_416", "data", ["output"], tensor)
    assert reference.shape == ours.shape == (52 * 52 + 26 * 26 + 13 * 13 + 7 * 7, 112)
    assert np.abs(reference - ours).max() <= 2e-3


@pytest.mark.parametrize("checkpoint, config, size", [
    (LEGACY_PTH, LEGACY_CFG, (320, 320)), (PLUS_PTH, PLUS_CFG, (416, 416))])
@pytest.mark.parametrize("image, expected", [("chelsea", "cat"), ("astronaut", "person"),
                                             ("motorcycle_left", "motorcycle")])
def test_native_decode_finds_the_obvious_object(checkpoint, config, size, image, expected):
    loaded = load_detector(checkpoint, config)
    tensor = plain_tensor(photo(image), *size)
    levels = levels_from_logits(loaded.model(tensor), loaded.spec.head.strides)
    found = native_decode(levels, loaded.spec.head.centre_offset, size, score_threshold=0.35)
    assert len(found) > 0
    top = int(np.argmax(found.scores))
    assert loaded.spec.class_names[found.labels[top]] == expected
    x1, y1, x2, y2 = found.boxes[top]
    assert (x2 - x1) * (y2 - y1) > 0.2 * size[0] * size[1]  # a large, frame-filling subject


def test_decode_centre_offsets_differ_by_half_a_stride():
    """Legacy priors sit at (x+0.5)*stride, Plus at x*stride: same logits, shifted boxes."""
    from heads.decode import LevelOutput
    cls = np.zeros((4, 1), np.float32)
    cls[3, 0] = 0.9  # cell (x=1, y=1) of a 2x2 grid
    dis = np.full((4, 32), -20.0, np.float32)
    dis[:, [2, 8 + 2, 16 + 2, 24 + 2]] = 20.0  # every side two bins
    level = LevelOutput(cls, dis, 2, 2, 8)
    legacy = native_decode([level], 0.5, (16, 16), 0.5)
    plus = native_decode([level], 0.0, (16, 16), 0.5)
    np.testing.assert_allclose(legacy.boxes[0], [0, 0, 16, 16], atol=1e-4)  # (12-16, 12+16) clipped
    np.testing.assert_allclose(plus.boxes[0], [0, 0, 16, 16], atol=1e-4)
    narrow = dis.copy()
    narrow[:, [2, 8 + 2, 16 + 2, 24 + 2]] = -20.0
    narrow[:, [0, 8 + 0, 16 + 1, 24 + 1]] = 20.0  # l=t=0, r=b=1 bin
    legacy = native_decode([LevelOutput(cls, narrow, 2, 2, 8)], 0.5, (64, 64), 0.5)
    plus = native_decode([LevelOutput(cls, narrow, 2, 2, 8)], 0.0, (64, 64), 0.5)
    np.testing.assert_allclose(legacy.boxes[0], [12, 12, 20, 20], atol=1e-4)
    np.testing.assert_allclose(plus.boxes[0], [8, 8, 16, 16], atol=1e-4)
