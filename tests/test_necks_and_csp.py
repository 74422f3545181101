"""TAN and FPN necks, CustomCspNet and TIMMWrapper (ConvNeXt) backbones: NanoDet's state_dict
names and shapes (fixtures/official_keys/, recorded from NanoDet's and timm's own modules),
forward shapes and strides, config checks, and inference from weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
import yaml
from onnx import numpy_helper

from common.errors import InputError
from heads.component import Component
from heads.config import read_config
from heads.custom_csp import NANODET_G_NET_CFG, CustomCspNet, checked_net_cfg
from heads.detector import build_detector
from heads.fpn import FPN
from heads.infer import infer_spec
from heads.pan import PAN
from heads.schema import ConfigProblem
from heads.tan import TAN, self_attention
from heads.timm_wrapper import TIMMWrapper
from heads.weights import UnknownArchitecture

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CONFIGS = FIXTURES / "configs"
OFFICIAL = FIXTURES / "official_keys"


def official(name: str) -> dict[str, Any]:
    return json.loads((OFFICIAL / name).read_text())


def checked_keywords(component: type[Component], section: dict[str, Any], where: str) -> dict:
    """A config section's keywords as heads.config reads them: each key checked, then mapped."""
    given = {name: check(section[name], f"{where}.{name}")
             for name, check in component.CONFIG_KEYS.items() if name in section}
    return component.keywords_from_config(given)


def built(component: type[Component], section: dict[str, Any], where: str) -> torch.nn.Module:
    return component(**checked_keywords(component, section, where)).eval()


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def seeded(module: torch.nn.Module, prefix: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {prefix + k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in module.state_dict().items()}


def config_section(config: str, part: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / config).read_text())["model"]["arch"][part]


# --- official names and shapes ----------------------------------------------------------------

@pytest.mark.parametrize("component, config, part, fixture", [
    (TAN, "nanodet-t.yml", "fpn", "TAN-nanodet-t.json"),
    (CustomCspNet, "nanodet-g.yml", "backbone", "CustomCspNet-nanodet-g.json"),
    (TIMMWrapper, "nanodet-plus_convnext-nano_640.yml", "backbone",
     "TIMMWrapper-convnext_nano.json"),
])
def test_built_from_the_official_config_it_has_nanodets_keys_and_shapes(component, config, part,
                                                                          fixture):
    recorded = official(fixture)
    section = config_section(config, part)
    assert recorded["config"] == section  # the fixture was recorded from this very config
    assert shapes(built(component, section, f"model.arch.{part}")) == recorded["state_dict"]


def test_fpn_has_nanodets_keys_and_pans_keys():
    recorded = official("FPN-shufflenetv2-1.0x.json")
    fpn = built(FPN, recorded["config"], "model.arch.fpn")
    assert shapes(fpn) == recorded["state_dict"]
    pan = PAN(in_channels=(116, 232, 464), out_channels=96)  # NanoDet's PAN subclasses FPN
    assert shapes(pan) == recorded["state_dict"]


def test_a_changed_module_no_longer_matches_the_recorded_keys():
    """The comparison above can fail: one encoder more, or another lateral width, is seen."""
    section = config_section("nanodet-t.yml", "fpn")
    recorded = official("TAN-nanodet-t.json")["state_dict"]
    assert shapes(built(TAN, {**section, "num_encoders": 2}, "fpn")) != recorded
    assert shapes(built(TAN, {**section, "out_channels": 96}, "fpn")) != recorded


# --- forward: NanoDet's outputs, shapes and strides ---

REFERENCE = "outputs-TAN-FPN-CustomCspNet-TIMMWrapper.json"
COMPONENTS = {"TAN": TAN, "FPN": FPN, "CustomCspNet": CustomCspNet, "TIMMWrapper": TIMMWrapper}


def reference_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The seeded weights the reference outputs were recorded with (see the fixture's "how")."""
    generator, sd = torch.Generator().manual_seed(0), {}
    for key, value in module.state_dict().items():
        if not value.is_floating_point():
            sd[key] = value
        elif key.endswith("running_var"):
            sd[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            sd[key] = torch.randn(value.shape, generator=generator) * 0.2
    return sd


@pytest.mark.parametrize("kind", COMPONENTS)
def test_outputs_equal_those_recorded_from_nanodets_module(kind):
    case = official(REFERENCE)["cases"][kind]
    module = built(COMPONENTS[kind], case["config"], kind)
    module.load_state_dict(reference_weights(module), strict=True)
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(shape, generator=generator) for shape in case["inputs"]]
    with torch.no_grad():
        outputs = module(inputs if len(inputs) > 1 else inputs[0])
    assert [list(o.shape) for o in outputs] == [r["shape"] for r in case["outputs"]]
    for output, recorded in zip(outputs, case["outputs"]):
        assert float(output.abs().sum()) == pytest.approx(recorded["abs_sum"], rel=1e-5)
        assert output.flatten()[:6].tolist() == pytest.approx(recorded["first"], rel=1e-4,
                                                              abs=1e-6)


# --- forward: shapes and strides -----------------------------------------------------------------

def test_tan_outputs_one_map_per_level_and_needs_the_trained_middle_size():
    tan = built(TAN, {**config_section("nanodet-t.yml", "fpn"), "feature_hw": [2, 3]}, "fpn")
    levels = [torch.randn(1, 116, 4, 6), torch.randn(1, 232, 2, 3), torch.randn(1, 464, 1, 2)]
    outs = tan(levels)
    assert [tuple(o.shape) for o in outs] == [(1, 128, 4, 6), (1, 128, 2, 3), (1, 128, 1, 2)]
    with pytest.raises(ValueError, match=r"^TAN's position embedding has 6 cells, so the middle "
                       r"level must have that many, not 9 \(the middle level is 3x3\)$"):
        tan([torch.randn(1, 116, 6, 6), torch.randn(1, 232, 3, 3), torch.randn(1, 464, 2, 2)])


def test_tan_names_the_input_size_it_was_trained_at():
    assert TAN.input_size_problem((320, 320), 16, feature_hw=(20, 20)) is None
    assert TAN.input_size_problem((320, 256), 16, feature_hw=(20, 20)) == (
        "input 320x256 gives a 20x16 middle level but TAN was trained with feature_hw "
        "[20, 20] (e.g. input 320x320)")


def test_tans_written_out_attention_equals_torchs_module():
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(embed_dim=16, num_heads=4, dropout=0.1).eval()
    tokens = torch.randn(6, 2, 16)  # (tokens, batch, channels), as NanoDet feeds its module
    batch_first = tokens.transpose(0, 1)
    with torch.no_grad():
        assert torch.equal(self_attention(attn, batch_first).transpose(0, 1),
                           attn(tokens, tokens, tokens)[0])


@pytest.mark.filterwarnings("ignore")
def test_tan_exports_to_onnx_at_opset_11(tmp_path):
    """torch's MultiheadAttention needs opset 13; the converter exports at 11."""
    tan = built(TAN, {"in_channels": [4, 8, 16], "out_channels": 8, "feature_hw": [2, 2],
                      "num_heads": 2, "num_encoders": 1, "mlp_ratio": 2, "dropout_ratio": 0.1},
                "fpn")

    class Levels(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tan = tan

        def forward(self, low, mid, top):
            return tuple(self.tan([low, mid, top]))

    levels = (torch.zeros(1, 4, 4, 4), torch.zeros(1, 8, 2, 2), torch.zeros(1, 16, 1, 1))
    torch.onnx.export(Levels().eval(), levels, str(tmp_path / "tan.onnx"), opset_version=11,
                      dynamo=False)
    graph = onnx.load(str(tmp_path / "tan.onnx")).graph
    constants = {node.output[0]: numpy_helper.to_array(node.attribute[0].t)
                 for node in graph.node if node.op_type == "Constant"}
    targets = [constants[node.input[1]].tolist() for node in graph.node
               if node.op_type == "Reshape" and node.input[1] in constants]
    # the attention's reshapes keep the batch first: ncnn crashed on token-first ones
    assert targets == [[1, 4, 2, 4]] * 3 + [[1, 4, 8]]


def test_fpn_adds_the_upsampled_top_level_and_pan_differs_from_it():
    fpn = built(FPN, {"in_channels": [4, 8], "out_channels": 2, "num_outs": 2}, "fpn")
    pan = PAN(in_channels=(4, 8), out_channels=2).eval()
    pan.load_state_dict(fpn.state_dict())
    levels = [torch.randn(1, 4, 4, 4), torch.randn(1, 8, 2, 2)]
    with torch.no_grad():
        top_down, with_bottom_up = fpn(levels), pan(levels)
    assert torch.equal(top_down[0], with_bottom_up[0])
    assert not torch.equal(top_down[1], with_bottom_up[1])  # PAN's bottom-up pass


@pytest.mark.parametrize("component, config, size", [
    (CustomCspNet, "nanodet-g.yml", (64, 96)),
    (TIMMWrapper, "nanodet-plus_convnext-nano_640.yml", (64, 64)),
])
def test_backbone_outputs_have_the_declared_widths_and_strides(component, config, size):
    keywords = checked_keywords(component, config_section(config, "backbone"), "backbone")
    with torch.no_grad():
        outs = component(**keywords).eval()(torch.zeros(1, 3, *size))
    widths = component.stage_widths(**keywords)
    strides = component.stage_strides(**keywords)
    assert [tuple(o.shape) for o in outs] == [(1, widths[s], size[0] // strides[s],
                                               size[1] // strides[s])
                                              for s in keywords["out_stages"]]


def test_stage_widths_and_strides_of_nanodet_g_and_convnext_nano():
    assert CustomCspNet.stage_widths(net_cfg=NANODET_G_NET_CFG) == {
        0: 32, 1: 32, 2: 64, 3: 128, 4: 256, 5: 512}
    assert CustomCspNet.stage_strides(net_cfg=NANODET_G_NET_CFG) == {
        0: 2, 1: 4, 2: 4, 3: 8, 4: 16, 5: 32}
    assert TIMMWrapper.stage_widths(model_name="convnext_nano") == {0: 80, 1: 160, 2: 320, 3: 640}
    assert TIMMWrapper.stage_strides() == {0: 4, 1: 8, 2: 16, 3: 32}
    assert CustomCspNet.describe(net_cfg=NANODET_G_NET_CFG) == "CustomCspNet (nanodet-g)"
    assert TIMMWrapper.describe(model_name="convnext_nano") == "timm convnext_nano"


# --- the whole config and inference from weights --------------------------------------------

@pytest.mark.parametrize("config, name", [
    ("nanodet-t.yml", "NanoDet (legacy): ShuffleNetV2 1.0x, TAN, NanoDetHead, 80 classes"),
    ("nanodet-g.yml", "NanoDet (legacy): CustomCspNet (nanodet-g), PAN, NanoDetHead, 80 classes"),
    ("nanodet-plus_convnext-nano_640.yml",
     "NanoDet-Plus: timm convnext_nano, GhostPAN, NanoDetPlusHead, 80 classes"),
])
def test_official_config_reads_builds_and_is_inferred_back_from_its_weights(config,
                                                                            name):
    spec = read_config(CONFIGS / config)
    assert spec.name.startswith(name)
    model = build_detector(spec)
    inferred = infer_spec(model.state_dict())
    assert inferred.backbone.kind == spec.backbone.kind and inferred.neck.kind == spec.neck.kind
    # weights hold no activations: the config's are taken as LeakyReLU (nanodet-g, -t use it)
    for part in ("backbone", "neck"):
        ours, theirs = getattr(inferred, part).keywords(), getattr(spec, part).keywords()
        assert {k: v for k, v in ours.items() if k != "activation"} == \
            {k: v for k, v in theirs.items() if k != "activation"}
    build_detector(inferred).load_state_dict(model.state_dict(), strict=True)


def test_tan_keywords_are_read_back_from_seeded_weights():
    section = {**config_section("nanodet-t.yml", "fpn"), "num_encoders": 2, "mlp_ratio": 2,
               "feature_hw": [5, 5]}
    sd = seeded(built(TAN, section, "fpn"), "fpn.")
    assert TAN.keywords_from_weights(sd) == {
        "in_channels": (116, 232, 464), "out_channels": 128, "feature_hw": (5, 5),
        "num_heads": 8, "num_encoders": 2, "mlp_ratio": 2, "dropout_ratio": 0.1,
        "activation": "LeakyReLU"}
    assert TAN.keywords_from_weights({"fpn.lateral_convs.0.conv.weight": torch.zeros(1)}) is None
    odd_ratio = seeded(built(TAN, {**section, "mlp_ratio": 1.5}, "fpn"), "fpn.")
    assert TAN.keywords_from_weights(odd_ratio)["mlp_ratio"] == 1.5


def test_custom_csp_and_timm_keywords_are_read_back_from_seeded_weights():
    csp = CustomCspNet(net_cfg=NANODET_G_NET_CFG)
    assert CustomCspNet.keywords_from_weights(seeded(csp, "backbone.")) == {
        "net_cfg": NANODET_G_NET_CFG, "activation": "LeakyReLU"}
    pico = TIMMWrapper(model_name="convnext_pico", in_channels=1, out_stages=(1, 2))
    assert TIMMWrapper.keywords_from_weights(seeded(pico, "backbone.")) == {
        "model_name": "convnext_pico", "in_channels": 1}
    others = {"backbone.stage2.0.branch1.0.weight": torch.zeros(1, 1, 1, 1)}
    assert CustomCspNet.keywords_from_weights(others) is None
    assert TIMMWrapper.keywords_from_weights(others) is None


def test_fpn_never_claims_weights_which_are_pans():
    sd = seeded(FPN(in_channels=(4, 8), out_channels=2, num_outs=2), "fpn.")
    assert FPN.keywords_from_weights(sd) is None
    assert PAN.keywords_from_weights(sd) == {"in_channels": (4, 8), "out_channels": 2}


def without(sd: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if part not in k}


@pytest.mark.parametrize("broken, message", [
    (lambda sd: without(sd, "lateral_convs.2."),
     r"^fpn keys look like TAN but it has 2 lateral convs, not 3$"),
    (lambda sd: {**sd, "fpn.pos_embed": torch.zeros(24, 1, 128)},
     (r"^fpn keys look like TAN but fpn.pos_embed has shape \(24, 1, 128\), not \(side\*side, "
     r"1, 128\) \(feature_hw is not stored: give --config\)$")),
])
def test_weights_that_look_like_tan_but_do_not_fit_get_one_line(broken, message):
    sd = seeded(built(TAN, config_section("nanodet-t.yml", "fpn"), "fpn"), "fpn.")
    assert TAN.keywords_from_weights(sd)["feature_hw"] == (20, 20)  # unbroken: read
    with pytest.raises(UnknownArchitecture, match=message):
        TAN.keywords_from_weights(broken(sd))


def test_weights_that_look_like_custom_csp_but_not_nanodet_g_get_one_line():
    net_cfg = [list(stage) for stage in NANODET_G_NET_CFG]
    net_cfg[3][2] = 1  # one residual block fewer
    sd = seeded(CustomCspNet(net_cfg=net_cfg), "backbone.")
    with pytest.raises(UnknownArchitecture, match=r"^backbone keys look like CustomCspNet but "
                       r"its stages \[.*\('CspBlock', 64, 1, 3\).*\] are not nanodet-g's "
                       r"\(strides and pooling are not stored: give --config\)$"):
        CustomCspNet.keywords_from_weights(sd)


@pytest.mark.parametrize("sd, message", [
    ({"backbone.timm.conv1.weight": torch.zeros(8, 3, 3, 3)},
     r"^backbone keys look like a timm model \(backbone.timm.conv1.weight\) but not a ConvNeXt"),
    ({"backbone.timm.stem_0.weight": torch.zeros(24, 3, 4, 4),
      "backbone.timm.stages_0.blocks.0.conv_dw.weight": torch.zeros(24, 1, 7, 7)},
     (r"^backbone keys look like timm's ConvNeXt but its depths \[1\] and widths \[24\] match "
     r"no convnext_atto")),
])
def test_weights_that_look_like_timm_but_are_not_a_rebuilt_convnext_get_one_line(sd, message):
    with pytest.raises(UnknownArchitecture, match=message):
        TIMMWrapper.keywords_from_weights(sd)


# --- config checks: one line naming the key path ----------------------------------------------

def edited_config(tmp_path: Path, config: str, part: str, **changes: Any) -> Path:
    cfg = yaml.safe_load((CONFIGS / config).read_text())
    cfg["model"]["arch"][part].update(changes)
    path = tmp_path / config
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("config, part, changes, message", [
    ("nanodet-t.yml", "fpn", {"num_heads": 7},
     "model.arch.fpn.num_heads: out_channels 128 is not divisible by num_heads 7"),
    ("nanodet-t.yml", "fpn", {"feature_hw": [20]},
     "model.arch.fpn.feature_hw: expected a list of 2 integers from 1 to 512, got [20] (a list)"),
    ("nanodet-t.yml", "fpn", {"mlp_ratio": 0},
     "model.arch.fpn.mlp_ratio: expected a number above 0 up to 64, got 0 (an integer)"),
    ("nanodet-t.yml", "fpn", {"in_channels": [116, 232]},
     "model.arch.fpn.in_channels: expected a list of 3 integers from 1 to 4096"),
    ("nanodet-g.yml", "backbone", {"net_cfg": [["Conv", 3, 32, 3, 2], ["Pool", 3, 2]]},
     "model.arch.backbone.net_cfg[1]: expected ['Conv', in_channels, out_channels, kernel_size"),
    ("nanodet-g.yml", "backbone", {"net_cfg": [["Conv", 3, 32, 3, 2], ["CspBlock", 16, 1, 3, 1]]},
     "model.arch.backbone.net_cfg[1]: takes 16 channels but gets 32"),
    ("nanodet-g.yml", "backbone", {"net_cfg": [["Conv", 3, 32, 3, True]]},
     "model.arch.backbone.net_cfg[0]: stride True is not an integer from 1 to 4"),
    ("nanodet-g.yml", "backbone", {"out_stages": [3, 4, 6]},
     "model.arch.backbone.out_stages [3, 4, 6]: net_cfg has stages 0 to 5"),
    ("nanodet-g.yml", "backbone", {"norm_cfg": {"type": "GN"}},
     "model.arch.backbone.norm_cfg: only type BN is supported"),
    ("nanodet-plus_convnext-nano_640.yml", "backbone", {"model_name": "resnet18"},
     ("model.arch.backbone.model_name 'resnet18' is not a timm model this tool rebuilds "
     "(known: convnext_atto, convnext_femto, convnext_pico, convnext_nano)")),
    ("nanodet-plus_convnext-nano_640.yml", "backbone", {"features_only": False},
     "model.arch.backbone.features_only=false is not supported"),
    ("nanodet-plus_convnext-nano_640.yml", "backbone", {"output_stride": 16},
     "model.arch.backbone.output_stride=16 is not supported (only 32, timm's default)"),
    ("nanodet-plus_convnext-nano_640.yml", "backbone", {"out_indices": [1, 2, 4]},
     "model.arch.backbone.out_indices: expected a list of 1 to 4 integers from 0 to 3"),
])
def test_a_bad_config_value_is_one_line_naming_the_key(tmp_path, config, part,
                                                       changes, message):
    read_config(CONFIGS / config)  # unedited: read
    with pytest.raises(InputError) as caught:
        read_config(edited_config(tmp_path, config, part, **changes))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_fpn_config_checks_name_the_key():
    section = {"in_channels": [116, 232, 464], "out_channels": 96, "num_outs": 3}
    assert built(FPN, section, "model.arch.fpn") is not None
    for changes, message in (
            ({"start_level": 1}, "model.arch.fpn.start_level=1 is not supported (only 0"),
            ({"num_outs": 2}, "model.arch.fpn.num_outs 2 is fewer than the 3 in_channels"),
            ({"norm_cfg": {"type": "BN"}}, "model.arch.fpn.norm_cfg={"),
            ({"end_level": 2}, "model.arch.fpn.end_level=2 is not supported (only -1 or 3")):
        with pytest.raises(ConfigProblem) as caught:
            checked_keywords(FPN, {**section, **changes}, "model.arch.fpn")
        assert str(caught.value).startswith(message)


def test_pretrained_and_checkpoint_path_are_checked_then_ignored():
    section = {**config_section("nanodet-plus_convnext-nano_640.yml", "backbone"),
               "checkpoint_path": "/nonexistent/weights.pth"}
    assert section["pretrained"] is True
    assert checked_keywords(TIMMWrapper, section, "backbone") == {
        "model_name": "convnext_nano", "out_stages": (1, 2, 3)}
    with pytest.raises(ConfigProblem, match=r"^backbone.pretrained: expected true, false or a"):
        checked_keywords(TIMMWrapper, {**section, "pretrained": [1]}, "backbone")


def test_net_cfg_check_refuses_an_odd_csp_width():
    with pytest.raises(ValueError, match=r"net_cfg\[1\]: a CspBlock needs an even channel count"):
        checked_net_cfg([["Conv", 3, 33, 3, 2], ["CspBlock", 33, 1, 3, 1]], "net_cfg", ValueError)
