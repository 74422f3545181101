"""The Plus->legacy rewrite in PyTorch: what the firmware decodes equals Plus's own decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads.decode import expected_distances, levels_from_logits
from heads.detector import build_detector
from heads.loader import load_detector
from heads.plus_to_legacy import (
    FOLD_SHARPNESS,
    PlusToLegacy,
    class_max_pair,
    distance_logits,
)
from parity.detect import legacy_layout_detections, native_detections
from parity.match import match_detections
from parity.preprocess import frame_to_tensor
from parity.synthetic import default_frames
from parity.targets.unitv2 import UNITV2
from tests.conftest import PLUS_PTH, seeded_state_dict, small_spec


@pytest.fixture(scope="module")
def plus():
    return load_detector(PLUS_PTH)


@pytest.fixture(scope="module")
def frames():
    return default_frames(40)


def firmware_vs_native(loaded, wrapper, frames) -> tuple[int, int, int]:
    """(matched at IoU >= 0.95 and |score diff| <= 0.01, reference count, extra)."""
    matched = total = extra = 0
    names = UNITV2.blobs.outputs()
    for _, frame in frames:
        feed, box = frame_to_tensor(frame, 320, 256)
        with torch.no_grad():
            tensor = torch.from_numpy(feed)
            levels = levels_from_logits(loaded.model(tensor), loaded.spec.head.strides)
            outputs = {n: o[0].numpy() for n, o in zip(names, wrapper(tensor))}
        reference = native_detections(levels, loaded.spec.head.centre_offset, box)
        converted = legacy_layout_detections(outputs, names, box)
        m = match_detections(reference, converted)
        good = (m.iou >= 0.95) & (m.score_diff <= 0.01) & m.same_label
        matched, total, extra = matched + int(good.sum()), total + len(reference), \
            extra + len(m.extra)
    return matched, total, extra


def test_fold_reproduces_plus_detections(plus, frames):
    matched, total, extra = firmware_vs_native(plus, PlusToLegacy(plus.model, "fold"), frames)
    assert total > 100
    assert matched / total >= 0.99 and extra == 0


def test_drop_loses_large_objects(plus, frames):
    matched, total, _ = firmware_vs_native(plus, PlusToLegacy(plus.model, "drop"), frames)
    assert matched < total  # the stride-64 level carries detections the firmware then misses


def test_naive_rewrite_fails(plus, frames):
    naive = PlusToLegacy(plus.model, "drop", compensate=False)
    matched, total, _ = firmware_vs_native(plus, naive, frames)
    assert matched / total < 0.5  # every box shifted by half a stride


@pytest.mark.parametrize("reg_max", [7, 10])
def test_emitted_logits_expect_the_distance(reg_max):
    spec = small_spec(True, reg_max=reg_max)
    model = build_detector(spec)
    model.load_state_dict(seeded_state_dict(spec))
    wrapper = PlusToLegacy(model, "fold")
    assert wrapper.reg_max_out == (reg_max + 1, reg_max + 1, 2 * reg_max + 1)
    d = torch.linspace(0, wrapper.reg_max_out[2], 301).view(1, 1, 1, -1).repeat(1, 4, 1, 1)
    logits = distance_logits(wrapper.endpoints[2], wrapper.spread[2], d)[0]
    logits = logits.reshape(4 * wrapper.level_bins[2], -1).T.numpy()
    # the probability floor leaks at most floor * sum(k) bins: < 1e-4 strides
    np.testing.assert_allclose(expected_distances(logits), d[0, :, 0].T.numpy(), atol=1e-4)
    below = distance_logits(wrapper.endpoints[2], wrapper.spread[2],
                            torch.full((1, 4, 1, 1), -0.4))  # r, b < 0.5 stride
    assert expected_distances(below[0].reshape(-1, 1).T.numpy())[0] == pytest.approx(
        [0, 0, 0, 0], abs=1e-4)  # clamps to the firmware centre: the documented residual


def test_class_max_pair_matches_amax():
    first, second = torch.randn(1, 81, 5, 7), torch.randn(1, 81, 5, 7)
    assert torch.equal(class_max_pair(first, second),
                       torch.cat([first.amax(1, keepdim=True), second.amax(1, keepdim=True)], 1))


def weakest_cells_taking(score32: np.ndarray, score64: np.ndarray) -> np.ndarray:
    """Where the fold puts stride 64, computed plainly: per block {2X-1, 2X} x {2Y-1, 2Y}
    of stride-32 cells, its weakest cell, if the stride-64 score beats it."""
    taken = np.zeros_like(score32)
    for big_y, big_x in np.ndindex(score64.shape):
        rows = [y for y in (2 * big_y - 1, 2 * big_y) if 0 <= y < score32.shape[0]]
        cols = [x for x in (2 * big_x - 1, 2 * big_x) if 0 <= x < score32.shape[1]]
        block = score32[np.ix_(rows, cols)]
        y, x = np.unravel_index(np.argmin(block), block.shape)
        taken[rows[y], cols[x]] = score64[big_y, big_x] > block[y, x]
    return taken


@pytest.mark.parametrize("grid", [(8, 10), (7, 11), (13, 13), (1, 2)])
def test_the_fold_takes_the_weakest_cell_of_each_block(grid):
    """Odd and even stride-32 grids (the last row/column of an even one belongs to no
    stride-64 cell); scores apart by more than 1/FOLD_SHARPNESS, so no cell blends."""
    rng = np.random.default_rng(sum(grid))
    height, width = grid
    small = ((height + 1) // 2, (width + 1) // 2)
    score32 = rng.permutation(height * width).reshape(grid) / (height * width)
    score64 = rng.uniform(0, 1, small) + 2 / FOLD_SHARPNESS
    wrapper = PlusToLegacy(build_detector(small_spec(True)), "fold")
    placed = np.zeros(grid)  # score64 on its cells 2X-1, 2X; 0 where no stride-64 cell is
    for big_y, big_x in np.ndindex(small):
        placed[max(2 * big_y - 1, 0):2 * big_y + 1, max(2 * big_x - 1, 0):2 * big_x + 1] = \
            score64[big_y, big_x]
    scores = torch.from_numpy(np.stack([score32, placed])[None].astype(np.float32))
    with torch.no_grad():
        take = wrapper._take(scores)[0].numpy()
    assert np.all(take == take[:1])  # alike on every channel it gates
    np.testing.assert_array_equal(take[0], weakest_cells_taking(score32, score64))


def test_rewrite_rejects_a_legacy_model():
    model = build_detector(small_spec(False))
    with pytest.raises(ValueError):
        PlusToLegacy(model)
