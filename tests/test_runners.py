"""Runner internals that the parity figures rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads.detector import build_detector
from heads.loader import load_detector
from parity.preprocess import frame_to_tensor
from parity.runners.torch_runner import SharedForward
from tests.conftest import PLUS_CFG, PLUS_PTH, photo, seeded_state_dict, small_spec


def eager_logits(model, feed: np.ndarray) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t for level in model(torch.from_numpy(feed)) for t in level]


@pytest.mark.parametrize("plus", [True, False])
def test_frozen_forward_is_bit_identical_to_eager(plus):
    model = build_detector(small_spec(plus))
    model.load_state_dict(seeded_state_dict(small_spec(plus)))
    forward = SharedForward(model)
    for size in ((320, 256), (224, 160)):  # a second input shape traces again
        feed, _ = frame_to_tensor(photo("chelsea"), *size)
        frozen = [t for level in forward(feed) for t in level]
        eager = eager_logits(model, feed)
        assert len(frozen) == len(eager)
        for ours, reference in zip(frozen, eager):
            assert torch.equal(ours, reference)


def test_frozen_forward_of_the_real_plus_checkpoint_is_bit_identical():
    model = load_detector(PLUS_PTH, PLUS_CFG).model
    feed, _ = frame_to_tensor(photo("motorcycle_left"), 320, 256)
    frozen = [t for level in SharedForward(model)(feed) for t in level]
    assert all(torch.equal(a, b) for a, b in zip(frozen, eager_logits(model, feed)))
