"""The Plus-to-legacy rewrite's clamp, built on purpose: the tool counts it and says so.

A NanoDet-Plus box whose right or bottom edge lies less than half a stride past its
cell's centre (x*stride) does not contain the firmware's centre ((x+0.5)*stride), so the
legacy layout shows that edge at the firmware's centre instead. The seeded checkpoints of
test_architectures.py keep every box at least 0.75 stride from its centre; here every
bottom edge is put 0.2 stride past it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from convert import convert_checkpoint
from heads.decode import LevelOutput, expected_distances
from heads.detector import build_detector
from heads.plus_to_legacy import PlusToLegacy, clamped_cells, rewrite_residuals
from parity.synthetic import default_frames
from tests.conftest import small_spec
from tests.test_architectures import (
    NEVER,
    NUM_CLASSES,
    UNITV2_SIZE,
    seeded_checkpoint,
    small_config,
)

CONFIG = "nanodet-plus-m_320.yml"
BOTTOM = 0.2  # strides past the Plus centre: 0.3 stride short of the firmware's centre
FRAME_SCALE = 0.5  # the 640x480 photos letterboxed into 320x256


def distance_logits(distances: list[float], bins: int = 8) -> np.ndarray:
    """One cell's 4*bins logits whose expectation per side is `distances` (each <= 1):
    mass d on bin 1, 1 - d on bin 0."""
    rows = []
    for d in distances:
        side = np.full(bins, -40.0)
        side[0], side[1] = math.log(max(1 - d, 1e-12)), math.log(max(d, 1e-12))
        rows.append(side)
    return np.concatenate(rows)


def one_level(distances: list[float], score: float, stride: int = 16, side: int = 2
               ) -> LevelOutput:
    """A side x side level whose cell 3 scores `score` with these distances, the rest 0."""
    cls = np.zeros((side * side, NUM_CLASSES), np.float32)
    cls[3, 1] = score
    dis = np.tile(distance_logits([1, 1, 1, 1]), (side * side, 1))
    dis[3] = distance_logits(distances)
    return LevelOutput(cls, dis.astype(np.float32), side, side, stride)


@pytest.mark.parametrize("distances, score, clamped", [
    ([1, 1, 1, BOTTOM], 0.9, {"bottom": BOTTOM}),
    ([1, 1, 0.3, 0.4], 0.9, {"right": 0.3, "bottom": 0.4}),
    ([0.1, 0.1, 1, 1], 0.9, {}),  # left/top: the firmware's centre is inside anyway
    ([1, 1, 0.5, 0.5], 0.9, {}),  # the edge at the firmware's centre: shown exactly
    ([1, 1, 1, BOTTOM], 0.3, {}),  # below the firmware's 0.4: never shown
])
def test_clamped_cells_are_the_boxes_without_the_firmware_centre(distances, score, clamped):
    level = one_level(distances, score)
    found = clamped_cells([level, level, level])
    assert len(found) == (3 if clamped else 0)
    assert rewrite_residuals([level, level, level])["clamped"] == len(found)
    for cell in found:
        assert cell.cell == 3 and cell.sides == pytest.approx(clamped, abs=1e-6)
        assert cell.shift == pytest.approx((0.5 - min(clamped.values())) * 16, abs=1e-4)


def fold_levels(weakest: tuple[int, int], distances: list[float]) -> list[LevelOutput]:
    """Strides 8-64 at 128x128: stride-64 cell (1, 1) scores 0.9 with `distances`; its
    stride-32 cells (1..2, 1..2) score 0.2, except `weakest` (y, x) at 0.1."""
    quiet = [one_level([1, 1, 1, 1], 0.0, stride, 128 // stride) for stride in (8, 16)]
    s32 = np.zeros((16, NUM_CLASSES), np.float32)
    s32[[5, 6, 9, 10], 0] = 0.2
    s32[4 * weakest[0] + weakest[1], 0] = 0.1
    s64 = np.zeros((4, NUM_CLASSES), np.float32)
    s64[3, 2] = 0.9
    dis64 = np.tile(distance_logits([1, 1, 1, 1]), (4, 1))
    dis64[3] = distance_logits(distances)
    return [*quiet, LevelOutput(s32, np.tile(distance_logits([1, 1, 1, 1]), (16, 1)), 4, 4, 32),
            LevelOutput(s64, dis64.astype(np.float32), 2, 2, 64)]


@pytest.mark.parametrize("weakest, distances, clamped", [
    ((1, 1), [0.1, 0.2, 0.1, 0.2], {"left": 0.1, "top": 0.2}),  # lands up left of the centre
    ((2, 2), [0.1, 0.2, 0.1, 0.2], {"right": 0.1, "bottom": 0.2}),  # down right
    ((1, 2), [0.3, 0.1, 0.1, 0.3], {"top": 0.1, "right": 0.1}),
    ((2, 2), [0.1, 0.1, 0.3, 0.3], {}),  # the short edges face away from its cell's centre
])
def test_folded_stride64_clamps_as_the_cell_it_lands_in(weakest, distances, clamped):
    found = [c for c in clamped_cells(fold_levels(weakest, distances)) if c.level == 3]
    assert [c.sides for c in found] == ([pytest.approx(clamped, abs=1e-6)] if clamped else [])
    if clamped:
        assert found[0].cell == 3 and found[0].shift == pytest.approx(
            (0.25 - min(clamped.values())) * 64, abs=1e-4)


def as_map(rows: np.ndarray, level: LevelOutput) -> torch.Tensor:
    """[H*W, C] rows -> a [1, C, H, W] float32 map."""
    return torch.from_numpy(rows.T.reshape(1, -1, level.height, level.width).astype(np.float32))


def test_the_fold_emulation_is_the_graph():
    """Where `clamped_cells` says a folded prediction lands is where PlusToLegacy puts it:
    the firmware decode of the rewritten outputs shows exactly the clamped edges."""
    levels = fold_levels((2, 1), [0.3, 0.2, 0.4, 0.1])  # lands in column 2X-1, row 2Y
    (cell,) = [c for c in clamped_cells(levels) if c.level == 3]
    assert cell.sides == pytest.approx({"bottom": 0.1}, abs=1e-6)
    logits = [(as_map(np.log(lv.cls / (1 - lv.cls) + 1e-30), lv),  # logits of the probabilities
               as_map(lv.dis, lv)) for lv in levels]
    wrapper = PlusToLegacy(build_detector(small_spec(True)), "fold")
    outputs = [o[0].numpy() for o in wrapper.from_levels(logits)]
    cls32, dis32 = outputs[4], outputs[5]
    landed = int(np.argmax(cls32.max(1)))
    assert landed == 4 * 2 + 1 and cls32[landed].max() == pytest.approx(0.9, abs=1e-4)
    # in strides of 32 from that cell's centre (48, 80), the Plus centre being (64, 64):
    # left 2*0.3-0.5, top 2*0.2+0.5, right 2*0.4+0.5, bottom 2*0.1-0.5 < 0 shown as 0
    shown = expected_distances(dis32[landed:landed + 1])[0]
    assert shown == pytest.approx([0.1, 0.9, 1.3, 0.0], abs=1e-3)


def edit_head(checkpoint: Path, reg_max: int, clamp: bool) -> None:
    """Rewrite `checkpoint`: stride 64 never fires (its predictions are not touched by the
    clamp below), and with `clamp` every cell of strides 8-32 predicts its bottom edge
    BOTTOM strides past its centre (the other sides as seeded)."""
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    bins = reg_max + 1
    state["model.head.gfl_cls.3.weight"][:NUM_CLASSES] = 0.0
    state["model.head.gfl_cls.3.bias"][:NUM_CLASSES] = NEVER
    bottom = slice(NUM_CLASSES + 3 * bins, NUM_CLASSES + 4 * bins)
    for level in range(3 if clamp else 0):
        state[f"model.head.gfl_cls.{level}.weight"][bottom] = 0.0
        state[f"model.head.gfl_cls.{level}.bias"][bottom] = torch.from_numpy(
            distance_logits([BOTTOM], bins))
    torch.save({"state_dict": state}, checkpoint)


@pytest.fixture(scope="module")
def clamped_conversion(tmp_path_factory):
    """(seeded result, clamped result) of converting the same Plus model for the UnitV2."""
    folder = tmp_path_factory.mktemp("clamp")
    config = small_config(CONFIG, folder)
    results = []
    for name, clamp in (("seeded", False), ("clamped", True)):
        checkpoint = folder / f"{name}.pth"
        spec = seeded_checkpoint(config, checkpoint, UNITV2_SIZE)
        edit_head(checkpoint, spec.head.reg_max, clamp)
        results.append(convert_checkpoint(
            checkpoint, config=config, legacy_head=True, output=folder / name,
            input_size=UNITV2_SIZE, target="unitv2", fp16=False, frames=default_frames(0)))
    return results


def test_seeded_boxes_need_no_clamp(clamped_conversion):
    seeded, _ = clamped_conversion
    verification = seeded.manifest["verification"]
    assert seeded.exit_code == 0 and verification["reference_detections"] >= 2
    assert verification["residuals"]["clamped"] == 0
    assert verification["clamped_detections"] == []
    assert "legacy layout" not in seeded.verification.summary()


def test_clamped_edges_fail_verification_and_say_why(clamped_conversion):
    _, clamped = clamped_conversion
    verification = clamped.manifest["verification"]
    assert clamped.exit_code == 1 and verification["status"] == "failed"
    shown = verification["reference_detections"]
    assert shown >= 2 and len(verification["clamped_detections"]) == shown
    assert verification["residuals"]["clamped"] >= shown  # NMS may drop some clamped cells
    for detection in verification["clamped_detections"]:
        assert detection["sides"] == {"bottom": pytest.approx(BOTTOM, abs=1e-3)}
        assert detection["shift_px"] == pytest.approx(
            (0.5 - BOTTOM) * detection["stride"] / FRAME_SCALE, abs=0.01)
    # the boxes are off by exactly the clamp, nothing else
    worst = max(d["shift_px"] for d in verification["clamped_detections"])
    assert verification["worst_edge_px"] == pytest.approx(worst, abs=0.01)
    summary = clamped.verification.summary()
    assert f"{shown} shown detections cannot be drawn in the legacy layout" in summary
    assert "clamped to that centre" in summary and "bottom edge 0.20 stride" in summary
    assert "\n" not in summary
