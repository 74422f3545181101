"""Shared fixtures: real checkpoints (from fixtures/), photos, small seeded models."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heads.detector import build_detector
from heads.spec import ArchSpec, BackboneSpec, HeadSpec, NeckSpec, default_class_names

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
IMAGES = ROOT / "parity" / "data" / "images"
SHARED_MODELS = ROOT.parent / "shared" / "real-models"

PLUS_PTH = FIXTURES / "nanodet-plus-m_416_coco.pth"
PLUS_CFG = FIXTURES / "nanodet-plus-m_416.yml"
LEGACY_PTH = FIXTURES / "nanodet-m_coco.pth"
LEGACY_CFG = FIXTURES / "nanodet-m.yml"
REFERENCE_NCNN = FIXTURES / "reference-ncnn"


def photo(name: str) -> np.ndarray:
    """A bundled 640x480 BGR photo (from scikit-image's data)."""
    image = cv2.imread(str(IMAGES / f"{name}.jpg"))
    assert image is not None, name
    return image


def plain_tensor(image_bgr: np.ndarray, width: int, height: int,
                 mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395)) -> torch.Tensor:
    """Resize (no letterbox) and normalise like NanoDet's pipeline: 1x3xHxW float32."""
    x = cv2.resize(image_bgr, (width, height)).astype(np.float32)
    x = (x - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))


def small_spec(plus: bool, num_classes: int = 3, size: str = "0.5x", reg_max: int = 7,
               share_cls_reg: bool = True) -> ArchSpec:
    """A small NanoDet(-Plus) for fast tests."""
    channels = {"0.5x": (48, 96, 192), "1.0x": (116, 232, 464), "1.5x": (176, 352, 704)}[size]
    head = {"num_classes": num_classes, "input_channel": 32, "feat_channels": 32,
            "stacked_convs": 2, "reg_max": reg_max, "activation": "LeakyReLU"}
    if plus:
        neck = NeckSpec.of("GhostPAN", in_channels=channels, out_channels=32,
                           use_depthwise=True, num_extra_level=1)
        head = HeadSpec.of("NanoDetPlusHead", kernel_size=5, strides=(8, 16, 32, 64), **head)
    else:
        neck = NeckSpec.of("PAN", in_channels=channels, out_channels=32)
        head = HeadSpec.of("NanoDetHead", kernel_size=3, strides=(8, 16, 32),
                           share_cls_reg=share_cls_reg, **head)
    backbone = BackboneSpec.of("ShuffleNetV2", model_size=size, activation="LeakyReLU")
    return ArchSpec(backbone, neck, head, default_class_names(num_classes))


def seeded_state_dict(spec: ArchSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic weights with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = build_detector(spec)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", ".bias")):
                tensor.uniform_(-0.1, 0.1)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def small_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Seeded fixture checkpoints: ShuffleNetV2 0.5x, 3 classes, legacy and Plus."""
    folder = tmp_path_factory.mktemp("small")
    paths = {}
    for name, plus in (("legacy", False), ("plus", True)):
        path = folder / f"small-{name}.pth"
        torch.save({"state_dict": seeded_state_dict(small_spec(plus))}, path)
        paths[name] = path
    return paths
