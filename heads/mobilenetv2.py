"""MobileNetV2 backbone with NanoDet's keys (nanodet/model/backbone/mobilenetv2.py).

NanoDet scales widths by plain truncation (`int(c * width_mult)`), not to
multiples of 8 as torchvision does, and its stage 6 ends with a 1x1 conv to
`last_channel`. The deprecated config key `act` replaces `activation`, as in NanoDet.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from heads.activations import activation_layer
from heads.component import Backbone, Keywords
from heads.schema import ACTIVATION, CHANNELS, Schema, integers, multiplier_name, width_multiplier
from heads.weights import (
    ASSUMED_ACTIVATION,
    StateDict,
    UnknownArchitecture,
    count,
    has_prefix,
    shape,
)

STEM_CHANNELS = 32


class StageSetting(NamedTuple):
    expand: int
    channels: int
    repeats: int
    stride: int


STAGES = (
    StageSetting(1, 16, 1, 1),
    StageSetting(6, 24, 2, 2),
    StageSetting(6, 32, 3, 2),
    StageSetting(6, 64, 4, 2),
    StageSetting(6, 96, 3, 1),
    StageSetting(6, 160, 3, 2),
    StageSetting(6, 320, 1, 1),
)


class ConvBNReLU(nn.Sequential):
    """conv (padding keeps the size at stride 1) -> BatchNorm -> activation; keys 0, 1, 2."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, activation: str = "ReLU"):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            activation_layer(activation),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (unless expand is 1), depthwise 3x3, linear 1x1 project; skip when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int, activation: str):
        super().__init__()
        hidden = round(inp * expand)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel_size=1, activation=activation))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden, activation=activation),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def stage_channels(width_mult: float) -> tuple[int, ...]:
    """Output channels of the inverted-residual blocks of stages 0-6 (before last_channel)."""
    return tuple(int(s.channels * width_mult) for s in STAGES)


class MobileNetV2(Backbone):
    """Outputs the feature maps of `out_stages` (0-6)."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "width_mult": width_multiplier,
        "out_stages": integers(0, 6, max_len=7),
        "last_channel": CHANNELS,
        "activation": ACTIVATION,
        "act": ACTIVATION,
    }
    WEIGHTS_HINT = "MobileNetV2 backbone keys (backbone.first_layer)"
    WEIGHTS_PREFIX = "backbone.first_layer."
    RENAMED_CONFIG_KEYS: ClassVar[dict[str, str]] = {"act": "activation"}  # deprecated in NanoDet

    def __init__(self, *, width_mult: float = 1.0, out_stages: tuple[int, ...] = (1, 2, 4, 6),
                 last_channel: int = 1280, activation: str = "ReLU"):
        super().__init__()
        self.out_stages = tuple(out_stages)
        inp = int(STEM_CHANNELS * width_mult)
        self.first_layer = ConvBNReLU(3, inp, stride=2, activation=activation)
        for index, (setting, oup) in enumerate(zip(STAGES, stage_channels(width_mult))):
            blocks: list[nn.Module] = []
            for block in range(setting.repeats):
                stride = setting.stride if block == 0 else 1
                blocks.append(InvertedResidual(inp, oup, stride, setting.expand, activation))
                inp = oup
            if index == len(STAGES) - 1:
                blocks.append(ConvBNReLU(inp, last_channel, kernel_size=1, activation=activation))
            setattr(self, f"stage{index}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.first_layer(x)
        return self.stage_outputs(x, ((i, getattr(self, f"stage{i}"))
                                      for i in range(len(STAGES))))

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if not has_prefix(sd, "backbone.first_layer."):
            return None
        stem = shape(sd, "backbone.first_layer.0.weight")[0]
        repeats = tuple(count(sd, f"backbone.stage{i}") for i in range(len(STAGES)))
        expected = tuple(s.repeats for s in STAGES[:-1]) + (STAGES[-1].repeats + 1,)
        found = tuple(project_width(sd, i) for i in range(len(STAGES)))
        width_mult = width_multiplier_of(stem, found)
        if repeats != expected or width_mult is None:
            raise UnknownArchitecture(
                f"backbone keys look like MobileNetV2 but its stages of {list(repeats)} blocks "
                f"(expected {list(expected)}), stem of {stem} and stages of {list(found)} "
                "channels fit no width_mult")
        last = shape(sd, f"backbone.stage6.{STAGES[-1].repeats}.0.weight")[0]
        return {"width_mult": width_mult, "last_channel": last, "activation": ASSUMED_ACTIVATION}

    @classmethod
    def stage_widths(cls, width_mult: float, last_channel: int, **_: object) -> dict[int, int]:
        widths = dict(enumerate(stage_channels(width_mult)))
        widths[len(STAGES) - 1] = last_channel
        return widths

    @classmethod
    def stage_strides(cls, **_: object) -> dict[int, int]:
        strides, stride = {}, 2  # the first layer halves the input
        for index, setting in enumerate(STAGES):
            stride *= setting.stride
            strides[index] = stride
        return strides

    @classmethod
    def describe(cls, width_mult: float, **_: object) -> str:
        return f"MobileNetV2 {multiplier_name(width_mult)}"


def project_width(sd: StateDict, stage: int) -> int:
    """Output channels of the first block of `stage` (its linear 1x1 projection)."""
    project = 1 if STAGES[stage].expand == 1 else 2  # conv: [expand,] depthwise, project, bn
    return shape(sd, f"backbone.stage{stage}.0.conv.{project}.weight")[0]


def width_multiplier_of(stem: int, widths: tuple[int, ...]) -> float | None:
    """The shortest decimal width_mult that gives these stem and stage widths, if any."""
    bases = (STEM_CHANNELS,) + tuple(s.channels for s in STAGES)
    found = (stem,) + widths
    low = max(c / b for c, b in zip(found, bases))
    for decimals in range(1, 7):
        scale = 10 ** decimals
        candidate = math.ceil(low * scale - 1e-9) / scale
        if (int(STEM_CHANNELS * candidate), stage_channels(candidate)) == (stem, widths):
            return candidate
    return None
