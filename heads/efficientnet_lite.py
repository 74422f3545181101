"""EfficientNet-Lite backbone with NanoDet's keys (nanodet/model/backbone/efficientnet_lite.py).

Two quirks of NanoDet's model are kept because released weights depend on them:
the config's `activation` reaches only the stem (every MBConv block uses ReLU6),
and BatchNorm uses eps 1e-3. `pretrain` is checked and then ignored: the
weights come from the checkpoint, nothing is downloaded. Drop-connect only acts
in training, so this inference-only rebuild leaves it out.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from heads.activations import activation_layer
from heads.component import Backbone, Keywords
from heads.schema import ACTIVATION, Schema, boolean, choice, integers
from heads.weights import StateDict, UnknownArchitecture, count, has_prefix, shape

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
BLOCK_ACTIVATION = "ReLU6"  # NanoDet builds every MBConv block with its default activation
STEM_CHANNELS = 32
ASSUMED_ACTIVATION = "ReLU6"  # NanoDet's default and that of every official config
# model_name -> (width multiplier, depth multiplier)
MULTIPLIERS = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
    "efficientnet_lite3": (1.2, 1.4),
    "efficientnet_lite4": (1.4, 1.8),
}


class StageSetting(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int


BASE_STAGES = (
    StageSetting(1, 3, 1, 1, 16),
    StageSetting(2, 3, 2, 6, 24),
    StageSetting(2, 5, 2, 6, 40),
    StageSetting(3, 3, 2, 6, 80),
    StageSetting(3, 5, 1, 6, 112),
    StageSetting(4, 5, 2, 6, 192),
    StageSetting(1, 3, 1, 6, 320),
)


def round_filters(filters: int, multiplier: float, divisor: int = 8) -> int:
    """Channels scaled by `multiplier`, rounded to a multiple of `divisor` (at most 10% down)."""
    scaled = filters * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_settings(model_name: str) -> list[StageSetting]:
    """The seven stages of `model_name`: repeats and widths scaled (not the first and last)."""
    width, depth = MULTIPLIERS[model_name]
    settings = []
    for index, base in enumerate(BASE_STAGES):
        fixed_depth = index in (0, len(BASE_STAGES) - 1)
        repeats = base.repeats if fixed_depth else math.ceil(depth * base.repeats)
        settings.append(base._replace(repeats=repeats,
                                      channels=round_filters(base.channels, width)))
    return settings


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand (unless expand is 1), depthwise, 1x1 project, skip."""

    def __init__(self, inp: int, oup: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.expand = expand
        self.use_skip = stride == 1 and inp == oup
        if expand != 1:
            self._expand_conv = nn.Conv2d(inp, hidden, 1, bias=False)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, (kernel - 1) // 2,
                                         groups=hidden, bias=False)
        self._bn1 = batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, oup, 1, bias=False)
        self._bn2 = batch_norm(oup)
        self._relu = activation_layer(BLOCK_ACTIVATION)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand != 1:
            out = self._relu(self._bn0(self._expand_conv(out)))
        out = self._relu(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_skip else out


class EfficientNetLite(Backbone):
    """Outputs the feature maps of `out_stages` (0-6; NanoDet's configs use 2, 4, 6)."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "model_name": choice(tuple(MULTIPLIERS), "an EfficientNet-Lite model_name"),
        "out_stages": integers(0, 6, max_len=7),
        "activation": ACTIVATION,
        "pretrain": boolean,
    }
    WEIGHTS_HINT = "EfficientNetLite backbone keys (backbone.blocks.0.0._depthwise_conv)"
    WEIGHTS_PREFIX = "backbone.blocks.0.0._depthwise_conv."
    DROPPED_CONFIG_KEYS = ("pretrain",)  # the checkpoint holds the weights: nothing is downloaded

    def __init__(self, *, model_name: str, out_stages: tuple[int, ...] = (2, 4, 6),
                 activation: str = "ReLU6"):
        super().__init__()
        if model_name not in MULTIPLIERS:
            raise ValueError(f"unknown EfficientNetLite model_name {model_name!r} "
                             f"(known: {', '.join(MULTIPLIERS)})")
        self.out_stages = tuple(out_stages)
        self.stem = nn.Sequential(
            nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False),
            batch_norm(STEM_CHANNELS),
            activation_layer(activation),
        )
        self.blocks = nn.ModuleList()
        inp = STEM_CHANNELS
        for setting in stage_settings(model_name):
            stage = nn.ModuleList()
            for index in range(setting.repeats):
                stride = setting.stride if index == 0 else 1
                stage.append(MBConvBlock(inp, setting.channels, setting.kernel, stride,
                                         setting.expand))
                inp = setting.channels
            self.blocks.append(stage)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for index, stage in enumerate(self.blocks):
            for block in stage:
                x = block(x)
            if index in self.out_stages:
                outputs.append(x)
        return outputs

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if not has_prefix(sd, "backbone.blocks.0.0._depthwise_conv."):
            return None
        stages = count(sd, "backbone.blocks")
        repeats = tuple(count(sd, f"backbone.blocks.{i}") for i in range(stages))
        widths = tuple(shape(sd, f"backbone.blocks.{i}.0._project_conv.weight")[0]
                       for i in range(stages))
        for name in MULTIPLIERS:
            settings = stage_settings(name)
            if (repeats == tuple(s.repeats for s in settings)
                    and widths == tuple(s.channels for s in settings)):
                return {"model_name": name, "activation": ASSUMED_ACTIVATION}
        raise UnknownArchitecture(
            f"backbone keys look like EfficientNetLite but its stages of {list(repeats)} "
            f"blocks, {list(widths)} channels match no model_name (known: "
            f"{', '.join(MULTIPLIERS)})")

    @classmethod
    def stage_widths(cls, model_name: str, **_: object) -> dict[int, int]:
        return {index: s.channels for index, s in enumerate(stage_settings(model_name))}

    @classmethod
    def stage_strides(cls, **_: object) -> dict[int, int]:
        strides, stride = {}, 2  # the stem halves the input
        for index, setting in enumerate(BASE_STAGES):
            stride *= setting.stride
            strides[index] = stride
        return strides

    @classmethod
    def describe(cls, model_name: str, **_: object) -> str:
        return f"EfficientNet-Lite{model_name.removeprefix('efficientnet_lite')}"
