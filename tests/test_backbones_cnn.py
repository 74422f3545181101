"""CNN backbones of NanoDet's source: EfficientNetLite, RepVGG, MobileNetV2, ResNet, GhostNet.

fixtures/official_keys/<Class>-<variant>.json hold NanoDet's own state_dict key ->
shape for a config section (made from RangiLyu/nanodet's source, named in the
file); each backbone built from that section must have exactly those keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from heads import registry
from heads.component import Backbone
from heads.config import read_config, spec_from_config
from heads.detector import build_detector
from heads.efficientnet_lite import EfficientNetLite
from heads.ghostnet import GhostNet
from heads.infer import infer_spec
from heads.mobilenetv2 import MobileNetV2
from heads.repvgg import RepVGG, RepVGGConvModule, deploy_form
from heads.resnet import ResNet
from heads.schema import ConfigProblem
from heads.shufflenetv2 import ShuffleNetV2
from heads.weights import UnknownArchitecture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONFIGS = FIXTURES / "configs"
CNN_BACKBONES = (EfficientNetLite, RepVGG, MobileNetV2, ResNet, GhostNet)
KEY_FIXTURES = ("EfficientNetLite-lite0", "EfficientNetLite-lite1", "EfficientNetLite-lite2",
                "RepVGG-A0", "RepVGG-A0-deploy", "MobileNetV2-1.0x", "ResNet-18", "ResNet-34",
                "ResNet-50", "ResNet-101", "GhostNet-1.0x")
OFFICIAL_CONFIGS = ("nanodet-EfficientNet-Lite0_320.yml", "nanodet-EfficientNet-Lite1_416.yml",
                    "nanodet-EfficientNet-Lite2_512.yml", "nanodet-RepVGG-A0_416.yml")
CLASSES = {cls.__name__: cls for cls in CNN_BACKBONES}


def official(name: str) -> dict:
    return json.loads((FIXTURES / "official_keys" / f"{name}.json").read_text())


def keywords_of(cls: type[Backbone], section: dict) -> dict:
    """Constructor keywords from a config section, through the component's own checks."""
    checked = {key: check(section[key], f"model.arch.backbone.{key}")
               for key, check in cls.CONFIG_KEYS.items() if key in section}
    return cls.keywords_from_config(checked)


def built(name: str) -> tuple[Backbone, dict]:
    doc = official(name)
    cls = CLASSES[doc["config"]["name"]]
    keywords = registry.complete_keywords(cls, keywords_of(cls, doc["config"]))
    return cls(**keywords).eval(), keywords


def key_shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BatchNorm statistics, so that every branch counts."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", ".bias")):
                tensor.uniform_(-0.1, 0.1)
            elif tensor.is_floating_point():
                tensor.normal_(0, 0.2)
    return module


def with_prefix(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"backbone.{k}": v for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", KEY_FIXTURES)
def test_the_state_dict_is_nanodets_key_for_key(name):
    model, _ = built(name)
    assert key_shapes(model) == official(name)["state_dict"]


def test_the_key_comparison_sees_a_different_variant():
    lite1, _ = built("EfficientNetLite-lite1")
    assert key_shapes(lite1) != official("EfficientNetLite-lite0")["state_dict"]
    resnet34, _ = built("ResNet-34")
    assert key_shapes(resnet34) != official("ResNet-18")["state_dict"]


@pytest.mark.parametrize("name", KEY_FIXTURES)
def test_outputs_have_the_declared_widths_and_strides(name):
    model, keywords = built(name)
    cls = type(model)
    widths, strides = cls.stage_widths(**keywords), cls.stage_strides(**keywords)
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outputs] == [
        (1, widths[s], 64 // strides[s], 96 // strides[s]) for s in model.out_stages]


ALL_STAGES = [
    (EfficientNetLite, {"model_name": "efficientnet_lite2", "out_stages": tuple(range(7))}),
    (RepVGG, {"arch": "A0", "out_stages": (1, 2, 3, 4)}),
    (MobileNetV2, {"width_mult": 0.5, "last_channel": 320, "out_stages": tuple(range(7))}),
    (ResNet, {"depth": 18, "out_stages": (1, 2, 3, 4)}),
    (GhostNet, {"width_mult": 0.5, "out_stages": tuple(range(10))}),
]


@pytest.mark.parametrize("cls, keywords", ALL_STAGES, ids=lambda v: str(v)[:30])
def test_every_stage_has_its_declared_width_and_stride(cls, keywords):
    """out_stages naming every stage: checks the tables for stages the configs leave out."""
    model = cls(**keywords).eval()
    keywords = registry.complete_keywords(cls, keywords)
    widths, strides = cls.stage_widths(**keywords), cls.stage_strides(**keywords)
    assert set(widths) == set(strides) == set(keywords["out_stages"])
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outputs] == [
        (widths[s], 64 // strides[s], 64 // strides[s]) for s in keywords["out_stages"]]


# --- inference from weights ------------------------------------------------------------------

VARIANTS = [
    (EfficientNetLite, {"model_name": "efficientnet_lite0"}),
    (EfficientNetLite, {"model_name": "efficientnet_lite2"}),
    (RepVGG, {"arch": "A0", "last_channel": 512}),
    (RepVGG, {"arch": "A1", "deploy": True}),
    (MobileNetV2, {"width_mult": 1.0, "last_channel": 1280}),
    (MobileNetV2, {"width_mult": 0.75, "last_channel": 640}),
    (MobileNetV2, {"width_mult": 1.4, "last_channel": 1280}),
    (ResNet, {"depth": 18}),
    (ResNet, {"depth": 50}),
    (GhostNet, {"width_mult": 1.0}),
    (GhostNet, {"width_mult": 0.5}),
]
ASSUMED = {EfficientNetLite: "ReLU6", RepVGG: "ReLU", MobileNetV2: "LeakyReLU",
           ResNet: "LeakyReLU", GhostNet: "LeakyReLU"}


@pytest.mark.parametrize("cls, keywords", VARIANTS, ids=lambda v: str(v))
def test_keywords_are_read_back_from_the_weights(cls, keywords):
    model = cls(**keywords)
    found = cls.keywords_from_weights(with_prefix(model))
    assert found.pop("activation") == ASSUMED[cls]
    assert cls(**found).state_dict().keys() == model.state_dict().keys()
    expected = dict(keywords)
    if cls is RepVGG:
        expected.setdefault("deploy", False)
        expected.setdefault("last_channel", None)
    assert found == expected


@pytest.mark.parametrize("cls", CNN_BACKBONES)
def test_weights_of_other_backbones_are_not_claimed(cls):
    for other, keywords in [*VARIANTS, (ShuffleNetV2, {"model_size": "0.5x"})]:
        if other is not cls:
            assert cls.keywords_from_weights(with_prefix(other(**keywords))) is None, other


def without(sd: dict, prefix: str) -> dict:
    return {k: v for k, v in sd.items() if not k.startswith(prefix)}


def resized(sd: dict, key: str, channels: int) -> dict:
    shape = list(sd[key].shape)
    return {**sd, key: torch.zeros([channels] + shape[1:])}


def broken_weights() -> list[tuple[type[Backbone], dict, str]]:
    lite = with_prefix(EfficientNetLite(model_name="efficientnet_lite0"))
    repvgg = with_prefix(RepVGG(arch="A0"))
    mobile = with_prefix(MobileNetV2())
    resnet = with_prefix(ResNet(depth=18))
    ghost = with_prefix(GhostNet())
    return [
        (EfficientNetLite, without(lite, "backbone.blocks.5.3."), "EfficientNetLite"),
        (EfficientNetLite, resized(lite, "backbone.blocks.2.0._project_conv.weight", 44),
         "EfficientNetLite"),
        (RepVGG, without(repvgg, "backbone.stage3.13."), "RepVGG"),
        (RepVGG, resized(repvgg, "backbone.stage2.0.rbr_dense.0.weight", 100), "RepVGG"),
        (MobileNetV2, without(mobile, "backbone.stage3.3."), "MobileNetV2"),
        (MobileNetV2, resized(mobile, "backbone.stage2.0.conv.2.weight", 33), "MobileNetV2"),
        (ResNet, without(resnet, "backbone.layer3.1."), "ResNet"),
        (GhostNet, without(ghost, "backbone.blocks.6.4."), "GhostNet"),
        (GhostNet, resized(ghost, "backbone.blocks.9.0.conv.weight", 1000), "GhostNet"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_weights_that_look_like_a_backbone_but_do_not_fit_get_one_line(case):
    cls, sd, name = broken_weights()[case]
    with pytest.raises(UnknownArchitecture) as raised:
        cls.keywords_from_weights(sd)
    message = str(raised.value)
    assert message.startswith(f"backbone keys look like {name} but ")
    assert "\n" not in message


# --- RepVGG: the deploy form -------------------------------------------------------------------

def relative_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((p - q).abs().max() / q.abs().max()) for p, q in zip(a, b, strict=True))


def test_repvgg_deploy_form_equals_the_branches_and_has_nanodets_keys():
    model = seeded(built("RepVGG-A0")[0]).eval()
    fused = deploy_form(model).eval()
    assert key_shapes(fused) == official("RepVGG-A0-deploy")["state_dict"]
    assert fused.deploy and not model.deploy  # the original is left as it was
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_difference(fused(x), model(x)) < 1e-4


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_a_fused_block_equals_its_branches_with_identity_and_groups(groups):
    block = seeded(RepVGGConvModule(8, 8, 1, groups, "ReLU")).eval()
    assert block.rbr_identity is not None
    fused = deploy_form(block)
    x = torch.randn(1, 8, 10, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_difference([fused(x)], [block(x)]) < 1e-5


def test_the_deploy_check_fails_when_a_branch_is_left_out():
    block = seeded(RepVGGConvModule(8, 8, 1, 2, "ReLU")).eval()
    broken = deploy_form(block)
    with torch.no_grad():
        kernel, _ = block.fused_kernel_bias()
        identity = block.identity_kernel() * (block.rbr_identity.weight.double() / (
            block.rbr_identity.running_var.double() + block.rbr_identity.eps).sqrt()
        ).reshape(-1, 1, 1, 1)
        broken.rbr_reparam.weight.copy_((kernel - identity).float())
    x = torch.randn(1, 8, 10, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_difference([broken(x)], [block(x)]) > 1e-2


def test_deploy_form_weights_are_read_back_and_load():
    model = seeded(RepVGG(arch="A0", out_stages=(2, 3, 4), last_channel=512)).eval()
    fused = deploy_form(model)
    keywords = RepVGG.keywords_from_weights(with_prefix(fused))
    assert keywords == {"arch": "A0", "activation": "ReLU", "deploy": True, "last_channel": 512}
    rebuilt = RepVGG(**keywords, out_stages=(2, 3, 4)).eval()
    rebuilt.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(rebuilt(x), fused(x), strict=True))


# --- configs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OFFICIAL_CONFIGS)
def test_official_configs_build_and_their_weights_are_inferred(name):
    spec = read_config(CONFIGS / name)
    model = build_detector(spec)
    with torch.no_grad():
        levels = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(cls.shape[2:]) for cls, _ in levels] == [(8, 8), (4, 4), (2, 2)]
    inferred = infer_spec(model.state_dict())
    assert inferred.architecture()["backbone"] == spec.architecture()["backbone"]
    assert inferred.architecture()["neck"] == spec.architecture()["neck"]


def test_a_detector_in_deploy_form_is_inferred_as_such():
    spec = read_config(CONFIGS / "nanodet-RepVGG-A0_416.yml")
    fused = deploy_form(build_detector(spec))
    inferred = infer_spec(fused.state_dict())
    assert inferred.backbone.keywords() == {**spec.backbone.keywords(), "deploy": True}
    assert inferred.name.startswith("NanoDet (legacy): RepVGG-A0 (deploy form), PAN")
    build_detector(inferred).load_state_dict(fused.state_dict(), strict=True)


def test_pretrain_is_accepted_and_never_downloads(monkeypatch):
    def no_download(*_args, **_kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    spec = read_config(CONFIGS / "nanodet-EfficientNet-Lite1_416.yml")
    assert "pretrain" not in spec.backbone.keywords()
    build_detector(spec)
    for cls in (EfficientNetLite, ResNet, GhostNet):
        assert "pretrain" in cls.CONFIG_KEYS
        assert "pretrain" not in cls.keywords_from_config({"pretrain": True})


def config(backbone: dict, in_channels: list[int]) -> dict:
    return {"model": {"arch": {
        "backbone": backbone,
        "fpn": {"name": "PAN", "in_channels": in_channels, "out_channels": 32},
        "head": {"name": "NanoDetHead", "num_classes": 3, "input_channel": 32,
                 "feat_channels": 32, "strides": [8, 16, 32]}}}}


SMALL_CONFIGS = [
    ({"name": "GhostNet"}, [40, 112, 960]),
    ({"name": "MobileNetV2", "out_stages": [2, 4, 6], "width_mult": 0.75, "last_channel": 640},
     [24, 72, 640]),
    ({"name": "ResNet", "depth": 18, "out_stages": [2, 3, 4]}, [128, 256, 512]),
]


@pytest.mark.parametrize("backbone, in_channels", SMALL_CONFIGS, ids=lambda v: str(v)[:24])
def test_custom_config_weights_are_inferred(backbone, in_channels):
    spec = spec_from_config(config(backbone, in_channels))
    inferred = infer_spec(build_detector(spec).state_dict()).backbone.keywords()
    assert inferred.pop("activation") == "LeakyReLU"
    expected = spec.backbone.keywords()
    del expected["activation"]
    assert inferred == expected


def test_the_deprecated_act_key_replaces_activation():
    mobile = spec_from_config(config({"name": "MobileNetV2", "out_stages": [2, 4, 6],
                                      "activation": "ReLU", "act": "LeakyReLU"},
                                     [32, 96, 1280]))
    assert mobile.backbone.activation == "LeakyReLU"
    ghost = spec_from_config(config({"name": "GhostNet", "out_stages": [4, 6, 9],
                                     "act": "ReLU6"}, [40, 112, 960]))
    assert ghost.backbone.activation == "ReLU6"


@pytest.mark.parametrize("backbone, problem", [
    ({"name": "EfficientNetLite", "model_name": "efficientnet_lite9"},
     "model.arch.backbone.model_name 'efficientnet_lite9' is not an EfficientNet-Lite model_name"),
    ({"name": "EfficientNetLite"}, "missing model.arch.backbone.model_name"),
    ({"name": "EfficientNetLite", "model_name": "efficientnet_lite0", "pretrain": "yes"},
     "model.arch.backbone.pretrain: expected true or false"),
    ({"name": "EfficientNetLite", "model_name": "efficientnet_lite0", "out_stages": [2, 7]},
     "model.arch.backbone.out_stages: expected a list of 1 to 7 integers from 0 to 6"),
    ({"name": "RepVGG", "arch": "C9"}, "model.arch.backbone.arch 'C9' is not a RepVGG arch"),
    ({"name": "RepVGG", "arch": "A0", "last_channel": 0},
     "model.arch.backbone.last_channel: expected an integer from 1 to 4096"),
    ({"name": "RepVGG", "arch": "A0", "deploy": 1},
     "model.arch.backbone.deploy: expected true or false"),
    ({"name": "ResNet", "depth": 19},
     "model.arch.backbone.depth 19 is not a ResNet depth (known: 18, 34, 50, 101, 152)"),
    ({"name": "ResNet", "depth": True}, "model.arch.backbone.depth True is not a ResNet depth"),
    ({"name": "MobileNetV2", "width_mult": 0},
     "model.arch.backbone.width_mult: expected a number above 0 and at most 4"),
    ({"name": "GhostNet", "width_mult": "1.0x"}, "model.arch.backbone.width_mult: expected"),
    ({"name": "GhostNet", "width_mult": float("nan")}, "model.arch.backbone.width_mult: expected"),
    ({"name": "GhostNet", "act": "Swish"},
     "model.arch.backbone.act 'Swish' is not a NanoDet activation"),
], ids=lambda v: str(v)[:40])
def test_bad_backbone_values_name_the_key(backbone, problem):
    with pytest.raises(ConfigProblem) as raised:
        spec_from_config(config(backbone, [40, 112, 320]))
    assert str(raised.value).startswith(problem)
    assert "\n" not in str(raised.value)


def test_describe_names_the_variant():
    assert EfficientNetLite.describe(model_name="efficientnet_lite1") == "EfficientNet-Lite1"
    assert RepVGG.describe(arch="A0", deploy=True) == "RepVGG-A0 (deploy form)"
    assert MobileNetV2.describe(width_mult=0.75) == "MobileNetV2 0.75x"
    assert ResNet.describe(depth=50) == "ResNet-50"
    assert GhostNet.describe(width_mult=1.0) == "GhostNet 1.0x"


def test_the_keyword_defaults_are_nanodets():
    assert MobileNetV2().out_stages == (1, 2, 4, 6)
    assert GhostNet().out_stages == (4, 6, 9)
    assert RepVGG(arch="A0").out_stages == (1, 2, 3, 4)
    assert EfficientNetLite(model_name="efficientnet_lite0").out_stages == (2, 4, 6)
    with pytest.raises(TypeError):
        EfficientNetLite("efficientnet_lite0")  # keyword-only construction
