"""The form a model is exported in for a target's ncnn:
`export_form(model, ncnn_tables)`, where `ncnn_tables` names the compatibility tables the
target is linted against (`parity.targets.Target.ncnn_tables`).

Every target gets RepVGG's deploy form (one 3x3 conv per block). A target linted against
the early-2021 ncnn the UnitV2 firmware links (`OLD_NCNN_TABLES`) also gets these
rewrites, each equal to the module it replaces within float rounding:

- timm's channel LayerNorm (ConvNeXt): that ncnn's LayerNorm does not read pnnx's
  param 2 (affine flag) and its Reduction reads explicit axes differently, so the mean and
  variance over channels become a 1x1 convolution with unit weights (a channel sum,
  exact in fp16) times 1/C, and the affine a depthwise 1x1 convolution.
- GELU (erf form): that ncnn has neither GELU nor Erf; GELU becomes
  x/2 + |x|/2 * (1 - erfc(|x|/sqrt 2)) with erfc(u) = t * exp(P(t) - u^2), t = 1/(1 + u/2),
  P a polynomial fitted here; only Abs, Exp, Div and scalar arithmetic remain.

What cannot be rewritten is refused with one line naming the op, the layer and the
nearest alternative (`OldNcnnRefusal`): TAN's attention multiplies two computed
matrices, which that ncnn has no layer for. ReLU6, hard sigmoid and hard swish need
nothing: they export as Clip, HardSigmoid and HardSwish, which that ncnn has.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import cache

import numpy as np
import torch
from torch import nn

from common.errors import StageError
from heads.repvgg import deploy_form
from heads.tan import TAN
from heads.timm_wrapper import LayerNorm2d

OLD_NCNN_TABLES = frozenset({"ncnn-20201208", "ncnn-20210222"})  # parity/data tables
ERFC_DEGREE = 9  # degree of P; its error stays below float32 rounding (tests show it)
ERFC_FIT_RANGE = 10.0  # erfc(10) ~ 2e-45: float32 exp underflows to 0 beyond it anyway
ERFC_FIT_POINTS = 20001


def export_form(model: nn.Module, ncnn_tables: Iterable[str]) -> nn.Module:
    """A copy of `model` as it is exported for an ncnn linted against `ncnn_tables`
    (the model itself is unchanged)."""
    exported = deploy_form(model)
    if OLD_NCNN_TABLES.intersection(ncnn_tables):
        exported = for_old_ncnn(exported)
    return exported


class OldNcnnRefusal(StageError):
    """The model has an op the old ncnn lacks and no equal rewrite exists."""

    def __init__(self, op: str, layer: str, why: str, alternative: str):
        super().__init__("export-form", f"{op} at {layer}: {why}; {alternative}")


def for_old_ncnn(model: nn.Module) -> nn.Module:
    """`model` (modified in place) with every op the early-2021 ncnn lacks rewritten, or
    OldNcnnRefusal naming the first op that cannot be."""
    refuse_unrewritable(model)
    root = rewritten(model)
    if root is not None:
        return root
    for name, module in list(model.named_modules()):
        replacement = rewritten(module)
        if replacement is not None:
            replace_submodule(model, name, replacement)
    return model


def refuse_unrewritable(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, TAN):
            raise OldNcnnRefusal(
                "attention (MatMul of two computed matrices)", f"{name}.transformer",
                "the UnitV2's ncnn (2021) has no MatMul layer, its Gemm takes no constant "
                "weights and its blobs have at most 3 dims (the heads need 4); and "
                "TAN's position embedding fixes the input to its config's size (nanodet-t: "
                "320x320), which the firmware (320x256) cannot feed",
                "use --target ncnn-latest, or for the UnitV2 the nearest architecture without "
                "attention: nanodet-m (ShuffleNetV2 1.0x + PAN)")


def rewritten(module: nn.Module) -> nn.Module | None:
    """The old-ncnn replacement of `module`, or None when it needs none."""
    for kind, rewrite in REWRITES:
        if type(module) is kind:
            return rewrite(module)
    return None


def replace_submodule(model: nn.Module, name: str, replacement: nn.Module) -> None:
    """Put `replacement` where `model`'s submodule `name` (dotted, not empty) is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, replacement)


# --------------------------------------------------------------------------- LayerNorm


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of NCHW in convolutions and elementwise ops only."""

    def __init__(self, norm: LayerNorm2d):
        super().__init__()
        channels = norm.normalized_shape[0]
        self.eps = norm.eps
        self.inverse_channels = 1.0 / channels
        self.channel_sum = nn.Conv2d(channels, 1, 1, bias=False)
        self.affine = nn.Conv2d(channels, channels, 1, groups=channels)
        with torch.no_grad():
            self.channel_sum.weight.fill_(1.0)
            self.affine.weight.copy_(norm.weight.detach().reshape(channels, 1, 1, 1))
            self.affine.bias.copy_(norm.bias.detach())

    def channel_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_sum(x) * self.inverse_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.channel_mean(x)
        variance = self.channel_mean(centred * centred)
        return self.affine(centred / torch.sqrt(variance + self.eps))


# --------------------------------------------------------------------------- GELU


def as_float32(value: float) -> float:
    """`value` rounded to float32: the model and the .param (pnnx writes 9 digits, which
    round-trip) compute with the same constant."""
    return float(np.float32(value))


@cache
def erfc_exponent_coefficients() -> tuple[float, ...]:
    """P's coefficients (lowest degree first), fitted by least squares so that
    erfc(u) = t exp(P(t) - u^2), t = 1/(1 + u/2), on 0 <= u <= ERFC_FIT_RANGE."""
    u = np.linspace(0.0, ERFC_FIT_RANGE, ERFC_FIT_POINTS)
    t = 1.0 / (1.0 + 0.5 * u)
    erfc = np.array([math.erfc(v) for v in u])
    exponent = np.log(erfc / t) + u * u
    fitted = np.polynomial.polynomial.polyfit(t, exponent, ERFC_DEGREE)
    return tuple(as_float32(c) for c in fitted)


class ErfFreeGELU(nn.Module):
    """GELU (erf form) from Abs, Exp, Div and scalar arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.coefficients = erfc_exponent_coefficients()
        self.inverse_sqrt2 = as_float32(1.0 / math.sqrt(2.0))

    def erfc(self, u: torch.Tensor) -> torch.Tensor:
        """erfc(u) for u >= 0."""
        t = 1.0 / (1.0 + 0.5 * u)
        highest, *lower = self.coefficients[::-1]
        exponent = t * highest
        for coefficient in lower[:-1]:
            exponent = (exponent + coefficient) * t
        return t * torch.exp(exponent + lower[-1] - u * u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        magnitude = torch.abs(x)
        erf = 1.0 - self.erfc(magnitude * self.inverse_sqrt2)
        return 0.5 * x + 0.5 * magnitude * erf


def erf_free_gelu(gelu: nn.GELU) -> nn.Module:
    """The erf form becomes ErfFreeGELU; the tanh form exports as TanH, which the old ncnn
    has, so it stays."""
    return ErfFreeGELU() if gelu.approximate == "none" else gelu


REWRITES: tuple[tuple[type[nn.Module], Callable[..., nn.Module]], ...] = (
    (LayerNorm2d, ChannelLayerNorm),
    (nn.GELU, erf_free_gelu),
)
