"""Architecture registries: a new backbone is one class and one registry call, and every
default comes from the component's constructor."""

from __future__ import annotations

import inspect
from typing import ClassVar

import pytest
import torch
from torch import nn

from heads import registry
from heads.component import Backbone, Keywords
from heads.config import spec_from_config
from heads.detector import build_detector
from heads.ghost_pan import GhostPAN
from heads.infer import infer_spec
from heads.nanodet_head import NanoDetHead
from heads.nanodet_plus_head import NanoDetPlusHead
from heads.schema import ACTIVATION, ConfigProblem, Schema, integer, integers
from heads.shufflenetv2 import ShuffleNetV2
from heads.weights import ASSUMED_ACTIVATION, StateDict, UnknownArchitecture, shape


class ToyBackbone(Backbone):
    """Three strided convs: stage s has stride 2**(s+1) and width * 2**(s-2) channels."""

    CONFIG_KEYS: ClassVar[Schema] = {"width": integer(1, 64), "out_stages": integers(2, 4),
                                     "activation": ACTIVATION}
    WEIGHTS_HINT = "ToyBackbone keys (backbone.toy_stem)"
    WEIGHTS_PREFIX = "backbone.toy_stem."

    def __init__(self, width: int = 8, out_stages: tuple[int, ...] = (2, 3, 4),
                 activation: str = "ReLU"):
        super().__init__()
        self.out_stages = tuple(out_stages)
        self.toy_stem = nn.Conv2d(3, width, 8, 8)
        self.toy_stages = nn.ModuleList(nn.Conv2d(width * 2 ** i, width * 2 ** (i + 1), 2, 2)
                                        for i in range(2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.toy_stem(x)]
        for stage in self.toy_stages:
            features.append(stage(features[-1]))
        return [f for stage, f in zip((2, 3, 4), features) if stage in self.out_stages]

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if "backbone.toy_stem.weight" not in sd:
            return None
        return {"width": shape(sd, "backbone.toy_stem.weight")[0],
                "activation": ASSUMED_ACTIVATION}

    @classmethod
    def stage_widths(cls, width: int, **_: object) -> dict[int, int]:
        return {2: width, 3: 2 * width, 4: 4 * width}

    @classmethod
    def stage_strides(cls, **_: object) -> dict[int, int]:
        return {2: 8, 3: 16, 4: 32}


@pytest.fixture
def restored_registries():
    """Registries as they were after the test (a toy component must not leak)."""
    saved = [(table, dict(table)) for table in (registry.BACKBONES, registry.NECKS,
                                                registry.HEADS)]
    yield
    for table, entries in saved:
        table.clear()
        table.update(entries)


def config(backbone: dict, fpn: dict, head: dict) -> dict:
    return {"model": {"arch": {"backbone": backbone, "fpn": fpn, "head": head}}}


def toy_config() -> dict:
    return config({"name": "ToyBackbone", "width": 8, "out_stages": [3, 4],
                   "activation": "LeakyReLU"},
                  {"name": "PAN", "in_channels": [16, 32], "out_channels": 24},
                  {"name": "NanoDetHead", "num_classes": 2, "input_channel": 24,
                   "strides": [16, 32], "reg_max": 7, "feat_channels": 24})


def test_a_registered_toy_backbone_is_built_from_config_and_inferred(restored_registries):
    with pytest.raises(ConfigProblem, match="backbone 'ToyBackbone' is not supported"):
        spec_from_config(toy_config())
    registry.register_backbone(ToyBackbone)

    spec = spec_from_config(toy_config())
    model = build_detector(spec)
    assert isinstance(model.backbone, ToyBackbone)
    assert spec.architecture()["backbone"] == {"kind": "ToyBackbone", "width": 8,
                                               "out_stages": (3, 4), "activation": "LeakyReLU"}
    assert spec.name.startswith("NanoDet (legacy): ToyBackbone, PAN, NanoDetHead, 2 classes")
    levels = model(torch.zeros(1, 3, 64, 96))
    assert [tuple(cls.shape) for cls, _ in levels] == [(1, 2, 4, 6), (1, 2, 2, 3)]

    inferred = infer_spec(model.state_dict())
    assert inferred.architecture() == spec.architecture()


def test_weights_of_no_registered_backbone_name_each_and_the_closest(restored_registries):
    registry.register_backbone(ToyBackbone)
    near_toy = {"backbone.toy_stem.0.weight": torch.zeros(1), "fpn.x": torch.zeros(1)}
    with pytest.raises(UnknownArchitecture) as refused:
        infer_spec(near_toy)
    message = str(refused.value)
    assert message.startswith("backbone weights match no known backbone (ShuffleNetV2, ")
    assert all(kind in message for kind in registry.BACKBONES)
    assert message.endswith("closest: ToyBackbone, whose keys start backbone.toy_stem.*, but "
                            "the first key that differs is backbone.toy_stem.0.weight")
    with pytest.raises(UnknownArchitecture, match="the first key, backbone.features.0.weight, "
                       "looks like none of theirs"):
        infer_spec({"backbone.features.0.weight": torch.zeros(1)})
    with pytest.raises(UnknownArchitecture, match=r"^no backbone weights \(no key starts"):
        infer_spec({"fpn.lateral_convs.0.conv.weight": torch.zeros(1, 1, 1, 1)})


def minimal_config(neck: str, head: str) -> dict:
    """Only the keys without a default; ShuffleNetV2's default 1.5x gives these widths."""
    extra = 1 if head == "NanoDetPlusHead" else 0
    return config({"name": "ShuffleNetV2"},
                  {"name": neck, "in_channels": [176, 352, 704], "out_channels": 96,
                   **({"num_extra_level": extra} if extra else {})},
                  {"name": head, "num_classes": 5, "input_channel": 96,
                   "strides": [8, 16, 32, 64][:3 + extra]})


def signature_defaults(cls: type) -> dict:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not p.empty}


@pytest.mark.parametrize("neck, head", [("PAN", "NanoDetHead"), ("GhostPAN", "NanoDetPlusHead")])
def test_keys_left_out_take_the_constructor_defaults(neck, head):
    spec = spec_from_config(minimal_config(neck, head))
    given = {"in_channels", "out_channels", "num_classes", "input_channel", "strides"}
    if neck == "GhostPAN":
        given.add("num_extra_level")
    for part, cls in ((spec.backbone, ShuffleNetV2), (spec.neck, registry.NECKS[neck]),
                      (spec.head, registry.HEADS[head])):
        defaults = signature_defaults(cls)
        for name, value in part.keywords().items():
            if name not in given:
                assert value == defaults[name], (part.kind, name)


def test_the_defaults_are_nanodets_own():
    """NanoDet's defaults, once, in the constructors (they used to disagree in three places)."""
    assert signature_defaults(ShuffleNetV2) == {"model_size": "1.5x", "out_stages": (2, 3, 4),
                                                "activation": "ReLU", "with_last_conv": False}
    assert signature_defaults(GhostPAN)["use_depthwise"] is False
    legacy, plus = signature_defaults(NanoDetHead), signature_defaults(NanoDetPlusHead)
    assert (legacy["reg_max"], legacy["feat_channels"], legacy["share_cls_reg"]) == (16, 256, False)
    assert (plus["reg_max"], plus["feat_channels"], plus["kernel_size"]) == (7, 96, 5)


def test_a_changed_constructor_default_is_what_a_config_without_the_key_gets(monkeypatch):
    before = spec_from_config(minimal_config("GhostPAN", "NanoDetPlusHead"))
    assert before.backbone.activation == "ReLU" and before.neck.kernel_size == 5
    monkeypatch.setattr(ShuffleNetV2.__init__, "__defaults__", ("1.5x", (2, 3, 4), "ReLU6", False))
    monkeypatch.setattr(GhostPAN.__init__, "__defaults__", (3, 0, False, "LeakyReLU"))
    after = spec_from_config(minimal_config("GhostPAN", "NanoDetPlusHead"))
    assert after.backbone.activation == "ReLU6" and after.neck.kernel_size == 3
