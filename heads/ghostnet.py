"""GhostNet backbone with NanoDet's keys (nanodet/model/backbone/ghostnet.py).

Stages 0-8 are Ghost bottlenecks, stage 9 a 1x1 conv. As in NanoDet, the
squeeze-excite layers always use ReLU and a hard sigmoid gate whatever the
config's `activation`; `pretrain` is checked and then ignored (nothing is
downloaded); the deprecated key `act` replaces `activation`.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from heads.activations import activation_layer
from heads.component import Backbone, Keywords
from heads.ghost_pan import GhostModule
from heads.schema import ACTIVATION, Schema, boolean, integers, multiplier_name, width_multiplier
from heads.weights import (
    ASSUMED_ACTIVATION,
    StateDict,
    UnknownArchitecture,
    count,
    has_prefix,
    shape,
)

SE_ACTIVATION = "ReLU"  # NanoDet builds SqueezeExcite with its default activation


class BlockSetting(NamedTuple):
    kernel: int
    hidden: int
    channels: int
    se_ratio: float
    stride: int


def _stage(*blocks: tuple[int, int, int, float, int]) -> tuple[BlockSetting, ...]:
    return tuple(BlockSetting(*block) for block in blocks)


STAGES = (
    _stage((3, 16, 16, 0, 1)),
    _stage((3, 48, 24, 0, 2)),
    _stage((3, 72, 24, 0, 1)),
    _stage((5, 72, 40, 0.25, 2)),
    _stage((5, 120, 40, 0.25, 1)),
    _stage((3, 240, 80, 0, 2)),
    _stage((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1),
           (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    _stage((5, 672, 160, 0.25, 2)),
    _stage((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1),
           (5, 960, 160, 0.25, 1)),
)
STEM_CHANNELS = 16
LAST_CHANNELS = 960  # stage 9: a 1x1 conv to the last block's hidden width


def make_divisible(value: float, divisor: int = 4) -> int:
    """`value` rounded to a multiple of `divisor`, at least `divisor`, at most 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, se_ratio: float):
        super().__init__()
        reduced = make_divisible(channels * se_ratio, 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = activation_layer(SE_ACTIVATION)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
        return x * hard_sigmoid(gate)


class GhostBottleneck(nn.Module):
    """Ghost module, depthwise conv when strided, optional squeeze-excite, ghost module, shortcut."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int,
                 stride: int, activation: str, se_ratio: float):
        super().__init__()
        pad = (dw_kernel_size - 1) // 2
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, activation=activation)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad,
                                     groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, activation=None)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, pad, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost1(x)
        if self.stride > 1:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)


class ConvBnAct(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, activation: str):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


def stage_channels(width_mult: float) -> tuple[int, ...]:
    """Output channels of stages 0-9."""
    blocks = tuple(make_divisible(stage[-1].channels * width_mult) for stage in STAGES)
    return blocks + (make_divisible(LAST_CHANNELS * width_mult),)


class GhostNet(Backbone):
    """Outputs the feature maps of `out_stages` (0-9; NanoDet's default 4, 6, 9)."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "width_mult": width_multiplier,
        "out_stages": integers(0, 9, max_len=10),
        "activation": ACTIVATION,
        "pretrain": boolean,
        "act": ACTIVATION,
    }
    WEIGHTS_HINT = "GhostNet backbone keys (backbone.conv_stem)"
    WEIGHTS_PREFIX = "backbone.conv_stem."
    DROPPED_CONFIG_KEYS = ("pretrain",)  # the checkpoint holds the weights: nothing is downloaded
    RENAMED_CONFIG_KEYS: ClassVar[dict[str, str]] = {"act": "activation"}  # deprecated in NanoDet

    def __init__(self, *, width_mult: float = 1.0, out_stages: tuple[int, ...] = (4, 6, 9),
                 activation: str = "ReLU"):
        super().__init__()
        self.out_stages = tuple(out_stages)
        inp = make_divisible(STEM_CHANNELS * width_mult)
        self.conv_stem = nn.Conv2d(3, inp, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inp)
        self.act1 = activation_layer(activation)
        stages: list[nn.Module] = []
        for stage in STAGES:
            blocks = []
            for b in stage:
                oup = make_divisible(b.channels * width_mult)
                blocks.append(GhostBottleneck(inp, make_divisible(b.hidden * width_mult), oup,
                                              b.kernel, b.stride, activation, b.se_ratio))
                inp = oup
            stages.append(nn.Sequential(*blocks))
        last = make_divisible(LAST_CHANNELS * width_mult)
        stages.append(nn.Sequential(ConvBnAct(inp, last, activation)))
        self.blocks = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        return self.stage_outputs(x, enumerate(self.blocks))

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if not has_prefix(sd, "backbone.conv_stem."):
            return None
        stem = shape(sd, "backbone.conv_stem.weight")[0]
        repeats = tuple(count(sd, f"backbone.blocks.{i}") for i in range(len(STAGES) + 1))
        expected = tuple(len(stage) for stage in STAGES) + (1,)
        widths = stage_outputs(sd, repeats) if repeats == expected else ()
        for width_mult in candidate_multipliers(stem):
            if widths == stage_channels(width_mult):
                return {"width_mult": width_mult, "activation": ASSUMED_ACTIVATION}
        raise UnknownArchitecture(
            f"backbone keys look like GhostNet but its stages of {list(repeats)} blocks "
            f"(expected {list(expected)}), stem of {stem} and stages of {list(widths)} "
            "channels fit no width_mult")

    @classmethod
    def stage_widths(cls, width_mult: float, **_: object) -> dict[int, int]:
        return dict(enumerate(stage_channels(width_mult)))

    @classmethod
    def stage_strides(cls, **_: object) -> dict[int, int]:
        strides, stride = {}, 2  # the stem halves the input
        for index, stage in enumerate(STAGES):
            stride *= stage[0].stride
            strides[index] = stride
        strides[len(STAGES)] = stride
        return strides

    @classmethod
    def describe(cls, width_mult: float, **_: object) -> str:
        return f"GhostNet {multiplier_name(width_mult)}"


def candidate_multipliers(stem: int) -> list[float]:
    """Width multipliers (0.01 to 4) that give a stem of `stem` channels, rounder ones first."""
    hundredths = range(1, 401)
    ordered = sorted(hundredths, key=lambda m: (m % 25 != 0, m % 5 != 0, m))
    return [m / 100 for m in ordered if make_divisible(STEM_CHANNELS * m / 100) == stem]


def stage_outputs(sd: StateDict, repeats: tuple[int, ...]) -> tuple[int, ...]:
    """Output channels of stages 0-9 (a ghost module outputs twice its primary conv's)."""
    blocks = tuple(
        2 * shape(sd, f"backbone.blocks.{i}.{repeats[i] - 1}.ghost2.primary_conv.0.weight")[0]
        for i in range(len(STAGES)))
    return blocks + (shape(sd, f"backbone.blocks.{len(STAGES)}.0.conv.weight")[0],)
