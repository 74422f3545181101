"""Architecture inference from weights alone, on small seeded models of many shapes."""

from __future__ import annotations

import pytest
import torch

from heads.infer import infer_spec
from heads.loader import load_detector
from tests.conftest import seeded_state_dict, small_spec


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("size", ["0.5x", "1.5x"])
@pytest.mark.parametrize("num_classes, reg_max", [(3, 7), (1, 10)])
def test_inference_round_trip(plus, size, num_classes, reg_max):
    spec = small_spec(plus, num_classes=num_classes, size=size, reg_max=reg_max)
    assert infer_spec(seeded_state_dict(spec)).architecture() == spec.architecture()


def test_inference_legacy_not_shared_head():
    spec = small_spec(False, share_cls_reg=False)
    assert infer_spec(seeded_state_dict(spec)).architecture() == spec.architecture()


def test_small_fixture_runs(small_checkpoints):
    for name, path in small_checkpoints.items():
        loaded = load_detector(path)
        out = loaded.model(torch.zeros(1, 3, 256, 320))
        assert len(out) == (4 if name == "plus" else 3)
        cls, dis = out[0]
        assert cls.shape == (1, 3, 32, 40) and dis.shape == (1, 32, 32, 40)
