"""Every official checkpoint format loads to the same weights, EMA preferred."""

from __future__ import annotations

import pytest
import torch

from heads.checkpoint import read_checkpoint
from heads.loader import load_detector
from tests.conftest import (
    LEGACY_CFG,
    LEGACY_PTH,
    PLUS_CFG,
    PLUS_PTH,
    SHARED_MODELS,
    photo,
    plain_tensor,
)


def _noisy(sd: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Like real non-EMA weights: the same tensors plus noise on float parameters."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var", "project")):
            v = v + torch.randn(v.shape, generator=gen) * 0.05 * (v.std() if v.numel() > 1 else 1)
        out[k] = v
    return out


@pytest.fixture(scope="module")
def plus_weights() -> dict[str, torch.Tensor]:
    return torch.load(PLUS_PTH, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def legacy_weights() -> dict[str, torch.Tensor]:
    return torch.load(LEGACY_PTH, weights_only=True)["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lightning_ckpt_uses_ema_weights(tmp_path, plus_weights):
    path = tmp_path / "model_best.ckpt"
    state = {f"avg_model.{k}": v for k, v in plus_weights.items()}
    state |= {f"model.{k}": v for k, v in _noisy(plus_weights).items()}
    torch.save({"epoch": 299, "global_step": 1000, "pytorch-lightning_version": "1.9.5",
                "state_dict": state, "optimizer_states": [], "lr_schedulers": []}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.format.startswith("lightning-ckpt")
    assert any("EMA" in note for note in ckpt.notes)
    expected = {k: v for k, v in plus_weights.items() if not k.startswith("aux_")}
    assert _same(ckpt.state_dict, expected)


def test_plus_ckpt_ema_changes_the_outputs(plus_weights, tmp_path):
    """The noisy model.* weights detect differently: picking them would be visible."""
    ema_path, noisy_path = tmp_path / "ema.pth", tmp_path / "noisy.pth"
    torch.save({"state_dict": plus_weights}, ema_path)
    torch.save({"state_dict": _noisy(plus_weights)}, noisy_path)
    tensor = plain_tensor(photo("chelsea"), 416, 416)
    ema = load_detector(ema_path, PLUS_CFG).model(tensor)
    noisy = load_detector(noisy_path, PLUS_CFG).model(tensor)
    diff = max((torch.sigmoid(a[0]) - torch.sigmoid(b[0])).abs().max().item()
               for a, b in zip(ema, noisy))
    assert diff > 0.05


@pytest.mark.skipif(not (SHARED_MODELS / "nanodet-plus-m_416_coco").is_dir(),
                    reason="../shared/real-models not beside this clone")
def test_real_plus_lightning_ckpt_picks_ema(plus_weights):
    ckpt = read_checkpoint(SHARED_MODELS / "nanodet-plus-m_416_coco" / "model_best.ckpt")
    expected = {k: v for k, v in plus_weights.items() if not k.startswith("aux_")}
    assert _same(ckpt.state_dict, expected)
    raw = torch.load(SHARED_MODELS / "nanodet-plus-m_416_coco" / "model_best.ckpt",
                     weights_only=True)["state_dict"]
    noisy = {k[len("model."):]: v for k, v in raw.items() if k.startswith("model.")}
    assert not torch.equal(noisy["head.gfl_cls.0.weight"], ckpt.state_dict["head.gfl_cls.0.weight"])


@pytest.mark.skipif(not (SHARED_MODELS / "nanodet-m_coco").is_dir(),
                    reason="../shared/real-models not beside this clone")
def test_real_legacy_lightning_ckpt(legacy_weights):
    ckpt = read_checkpoint(SHARED_MODELS / "nanodet-m_coco" / "model_best.ckpt")
    assert ckpt.format == "lightning-ckpt (pytorch-lightning 1.4.9)"
    assert _same(ckpt.state_dict, legacy_weights)


@pytest.mark.parametrize("layout", ["v0x", "v0x-module", "bare", "model-best", "lightning-no-ema"])
def test_every_format_loads_the_same_weights(tmp_path, legacy_weights, layout):
    path = tmp_path / "ckpt.pth"
    if layout == "v0x":
        obj = {"epoch": 280, "state_dict": legacy_weights, "iter": 1}
    elif layout == "v0x-module":
        obj = {"epoch": 280, "state_dict": {f"module.{k}": v for k, v in legacy_weights.items()},
               "iter": 1}
    elif layout == "bare":
        obj = dict(legacy_weights)
    elif layout == "model-best":
        obj = {"state_dict": legacy_weights}
    else:
        obj = {"epoch": 1, "pytorch-lightning_version": "1.4.9",
               "state_dict": {f"model.{k}": v for k, v in legacy_weights.items()}}
    torch.save(obj, path)
    loaded = load_detector(path, LEGACY_CFG)
    assert _same(loaded.model.state_dict(), legacy_weights)


def test_inferred_architecture_equals_config():
    for checkpoint, config in ((LEGACY_PTH, LEGACY_CFG), (PLUS_PTH, PLUS_CFG)):
        inferred = load_detector(checkpoint).spec
        configured = load_detector(checkpoint, config).spec
        assert inferred.architecture() == configured.architecture()
        assert inferred.source == "inferred" and configured.source == "config"
        assert inferred.class_names[:2] == ("class0", "class1")
        assert configured.class_names[:2] == ("person", "bicycle")
