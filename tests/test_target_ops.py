"""heads.target_ops: the export form of a model for a target's ncnn.

Each old-ncnn rewrite equals the module it replaces within float rounding, and its
export passes the UnitV2 lint where the original's does not (so removing a rewrite fails
`test_rewritten_ops_pass_the_unitv2_lint`)."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from common.errors import StageError
from convert.ncnn_lint import lint_param
from convert.stages import export_onnx, run_pnnx, simplify_onnx
from heads.detector import build_detector
from heads.ghostnet import hard_sigmoid
from heads.repvgg import RepVGG, RepVGGConvModule
from heads.tan import TAN
from heads.target_ops import (
    ChannelLayerNorm,
    ErfFreeGELU,
    OldNcnnRefusal,
    export_form,
    for_old_ncnn,
)
from heads.timm_wrapper import ConvNeXtBlock, LayerNorm2d
from parity.targets import target_named
from tests.conftest import seeded_state_dict, small_spec

FLOAT_EPS = torch.finfo(torch.float32).eps
UNITV2_TABLES = target_named("unitv2").ncnn_tables
LATEST_TABLES = target_named("ncnn-latest").ncnn_tables


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """`module` in eval mode with non-trivial norms, scales and biases."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var") or (tensor.dim() == 1 and name.endswith("weight")):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bias", "gamma")):
                tensor.uniform_(-0.2, 0.2)
    return module.eval()


def exactly_erf_gelu(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def unitv2_lint_errors(module: nn.Module, channels: int, size: int = 16) -> list[str]:
    """Export `module` (on a 1 x channels x size x size input) as the pipeline does
    (convert.stages), then lint the .param for the UnitV2: the error findings."""
    wrapped = nn.Sequential(nn.Conv2d(3, channels, 1), module).eval()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        export_onnx(wrapped, work / "m.onnx", size, size, "in0", ["out0"])
        simplify_onnx(work / "m.onnx", work / "m.sim.onnx")
        (work / "pnnx").mkdir()
        param, weights = run_pnnx(work / "m.sim.onnx", work / "pnnx", size, size, fp16=True)
        findings = lint_param(param, weights, target="unitv2")
    return [f"{f.layer_type}: {f.message}" for f in findings if f.severity == "error"]


class HardSigmoidGate(nn.Module):
    """GhostNet's squeeze-excite gate: x * relu6(x + 3) / 6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * hard_sigmoid(x)


# --------------------------------------------------------------------------- equality


def test_channel_layer_norm_equals_timms():
    norm = seeded(LayerNorm2d(24))
    x = torch.randn(2, 24, 9, 7) * 4 + 2
    rewritten = ChannelLayerNorm(norm)
    expected, got = norm(x), rewritten(x)
    assert expected.abs().max() > 1
    # the channel sum's weights survive fp16 storage exactly (1/C would not)
    assert torch.equal(rewritten.channel_sum.weight.half().float(), torch.ones(1, 24, 1, 1))
    assert (got - expected).abs().max() <= 8 * FLOAT_EPS * expected.abs().max()


def test_channel_layer_norm_detects_a_wrong_affine():
    norm = seeded(LayerNorm2d(8))
    rewritten = ChannelLayerNorm(norm)
    with torch.no_grad():
        rewritten.affine.bias[3] += 1e-4
    x = torch.randn(1, 8, 4, 4)
    assert (rewritten(x) - norm(x)).abs().max() > 5e-5


def test_erf_free_gelu_is_as_accurate_as_torchs_own():
    """Against float64 erf, the rewrite errs by less than 3 float32 epsilons of |x| at
    every x (torch's float32 GELU errs by up to 3 too), and differs from torch's by at
    most 5."""
    x = torch.linspace(-12, 12, 200_001)
    exact = exactly_erf_gelu(x)
    scale = FLOAT_EPS * x.abs().double().clamp(min=1e-6)
    rewrite_error = ((ErfFreeGELU()(x).double() - exact).abs() / scale).max()
    torch_error = ((nn.functional.gelu(x).double() - exact).abs() / scale).max()
    difference = ((ErfFreeGELU()(x) - nn.functional.gelu(x)).abs().double() / scale).max()
    assert rewrite_error <= 3.0, rewrite_error
    assert torch_error <= 3.0  # the bound is float rounding, not a loose tolerance
    assert difference <= 5.0, difference


def test_tanh_gelu_is_not_erf_gelu():
    """Why the tanh form is no rewrite of the erf form: it differs far beyond rounding."""
    x = torch.linspace(-6, 6, 10_001)
    tanh_form = nn.functional.gelu(x, approximate="tanh").double()
    assert (tanh_form - exactly_erf_gelu(x)).abs().max() > 1e-4


def test_for_old_ncnn_rewrites_a_convnext_block_equal():
    block = seeded(ConvNeXtBlock(16))
    rewritten = for_old_ncnn(copy.deepcopy(block))
    assert not any(isinstance(m, (LayerNorm2d, nn.GELU)) for m in rewritten.modules())
    x = torch.randn(1, 16, 8, 8)
    expected = block(x)
    assert (rewritten(x) - expected).abs().max() <= 16 * FLOAT_EPS * expected.abs().max()


def test_for_old_ncnn_rewrites_a_root_module():
    assert isinstance(for_old_ncnn(nn.GELU()), ErfFreeGELU)


def test_for_old_ncnn_keeps_ops_that_old_ncnn_has():
    model = nn.Sequential(nn.ReLU6(), nn.Hardswish(), nn.Hardsigmoid(), HardSigmoidGate(),
                          nn.GELU(approximate="tanh"))
    kept = for_old_ncnn(copy.deepcopy(model))
    assert [type(m) for m in kept] == [type(m) for m in model]
    assert kept[4].approximate == "tanh"


# --------------------------------------------------------------------------- lint


@pytest.fixture(scope="module")
def rewritable_ops() -> nn.Module:
    """Every op the rewrites handle, and those that need none, in one chain."""
    return seeded(nn.Sequential(LayerNorm2d(8), nn.GELU(), nn.ReLU6(), nn.Hardswish(),
                                nn.Hardsigmoid(), HardSigmoidGate()))


def test_original_ops_fail_the_unitv2_lint(rewritable_ops):
    errors = unitv2_lint_errors(rewritable_ops, 8)
    assert any(e.startswith("LayerNorm: param id 2") for e in errors), errors
    assert any(e.startswith("GELU: layer type 'GELU' is not registered") for e in errors), errors


def test_rewritten_ops_pass_the_unitv2_lint(rewritable_ops):
    rewritten = for_old_ncnn(copy.deepcopy(rewritable_ops))
    assert unitv2_lint_errors(rewritten, 8) == []


# --------------------------------------------------------------------------- refusal


def tiny_tan() -> TAN:
    return TAN(in_channels=(8, 16, 32), out_channels=8, feature_hw=(2, 2), num_heads=2,
               num_encoders=1, mlp_ratio=1.0, dropout_ratio=0.0)


def test_tan_is_refused_naming_op_layer_and_alternative():
    model = nn.Module()
    model.fpn = tiny_tan()
    with pytest.raises(OldNcnnRefusal) as refusal:
        export_form(model, UNITV2_TABLES)
    message = str(refusal.value)
    assert isinstance(refusal.value, StageError)
    assert "\n" not in message
    for part in ("MatMul", "fpn.transformer", "320x320", "--target ncnn-latest", "nanodet-m"):
        assert part in message, part


def test_tan_exports_unchanged_for_ncnn_latest():
    model = nn.Module()
    model.fpn = tiny_tan()
    assert isinstance(export_form(model, LATEST_TABLES).fpn, TAN)


# --------------------------------------------------------------------------- export_form


def test_export_form_fuses_repvgg_and_equals_the_branches():
    backbone = seeded(RepVGG(arch="A0", out_stages=(2, 3, 4)))
    exported = export_form(backbone, UNITV2_TABLES)
    blocks = [m for m in exported.modules() if isinstance(m, RepVGGConvModule)]
    assert blocks and all(b.is_deploy for b in blocks)
    assert not any(b.is_deploy for b in backbone.modules() if isinstance(b, RepVGGConvModule))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for expected, got in zip(backbone(x), exported(x), strict=True):
            assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_export_form_leaves_the_model_unchanged_and_equal():
    model = build_detector(small_spec(plus=True))
    model.load_state_dict(seeded_state_dict(small_spec(plus=True)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for tables in (UNITV2_TABLES, LATEST_TABLES):
            exported = export_form(model, tables)
            assert exported is not model
            for (cls_a, reg_a), (cls_b, reg_b) in zip(model(x), exported(x), strict=True):
                assert torch.equal(cls_a, cls_b) and torch.equal(reg_a, reg_b)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_export_form_rewrites_gelu_only_for_old_ncnn():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU())
    assert isinstance(export_form(model, LATEST_TABLES)[1], nn.GELU)
    assert isinstance(export_form(model, UNITV2_TABLES)[1], ErfFreeGELU)


def test_export_form_follows_the_tables_not_the_target_name():
    """Any target linted against a 2020/2021 table gets the rewrites."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU())
    assert isinstance(export_form(model, ("ncnn-20201208",))[1], ErfFreeGELU)
    assert isinstance(export_form(model, ())[1], nn.GELU)
