"""ShuffleNetV2 backbone with NanoDet's keys (nanodet/model/backbone/shufflenetv2.py)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from heads.activations import activation_layer
from heads.component import Backbone, Keywords
from heads.schema import ACTIVATION, Schema, boolean, choice, integers
from heads.weights import ASSUMED_ACTIVATION, StateDict, UnknownArchitecture, has_prefix, shape

STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = {
    "0.5x": (24, 48, 96, 192, 1024),
    "1.0x": (24, 116, 232, 464, 1024),
    "1.5x": (24, 176, 352, 704, 1024),
    "2.0x": (24, 244, 488, 976, 2048),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleV2Block(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, activation: str):
        super().__init__()
        self.stride = stride
        branch = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                activation_layer(activation),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            activation_layer(activation),
            nn.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False),
            nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            activation_layer(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(Backbone):
    """Outputs the feature maps of `out_stages` (2, 3, 4 = strides 8, 16, 32)."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "model_size": choice(tuple(STAGE_CHANNELS), "a ShuffleNetV2 size"),
        "out_stages": integers(2, 4, max_len=3),
        "activation": ACTIVATION,
        "with_last_conv": boolean,
    }
    WEIGHTS_HINT = "ShuffleNetV2 backbone keys (backbone.stage2.0.branch1.*)"
    WEIGHTS_PREFIX = "backbone.stage2.0.branch1."

    def __init__(self, model_size: str = "1.5x", out_stages: tuple[int, ...] = (2, 3, 4),
                 activation: str = "ReLU", with_last_conv: bool = False):
        super().__init__()
        if model_size not in STAGE_CHANNELS:
            raise ValueError(f"unknown ShuffleNetV2 model_size {model_size!r} "
                             f"(known: {', '.join(STAGE_CHANNELS)})")
        self.out_stages = tuple(out_stages)
        channels = STAGE_CHANNELS[model_size]
        self.stage_out_channels = channels
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels[0]),
            activation_layer(activation),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inp = channels[0]
        for index, (repeats, oup) in enumerate(zip(STAGE_REPEATS, channels[1:4]), start=2):
            blocks = [ShuffleV2Block(inp, oup, 2, activation)]
            blocks += [ShuffleV2Block(oup, oup, 1, activation) for _ in range(repeats - 1)]
            setattr(self, f"stage{index}", nn.Sequential(*blocks))
            inp = oup
        if with_last_conv:
            self.conv5 = nn.Sequential(
                nn.Conv2d(inp, channels[-1], 1, 1, 0, bias=False),
                nn.BatchNorm2d(channels[-1]),
                activation_layer(activation),
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        outputs = []
        for index in (2, 3, 4):
            x = getattr(self, f"stage{index}")(x)
            if index == 4 and hasattr(self, "conv5"):
                x = self.conv5(x)
            if index in self.out_stages:
                outputs.append(x)
        return outputs

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if not has_prefix(sd, "backbone.stage2.0.branch1."):  # RepVGG, MobileNetV2 have stage2 too
            return None
        stage2 = 2 * shape(sd, "backbone.stage2.0.branch1.2.weight")[0]
        sizes = [size for size, ch in STAGE_CHANNELS.items() if ch[1] == stage2]
        if not sizes:
            raise UnknownArchitecture(f"ShuffleNetV2 stage2 width {stage2} matches no model_size")
        return {"model_size": sizes[0], "activation": ASSUMED_ACTIVATION,
                "with_last_conv": "backbone.conv5.0.weight" in sd}

    @classmethod
    def stage_widths(cls, model_size: str, with_last_conv: bool, **_: object) -> dict[int, int]:
        channels = STAGE_CHANNELS[model_size]
        return {2: channels[1], 3: channels[2], 4: channels[4 if with_last_conv else 3]}

    @classmethod
    def stage_strides(cls, **_: object) -> dict[int, int]:
        return {stage: 2 ** (stage + 1) for stage in (2, 3, 4)}

    @classmethod
    def describe(cls, model_size: str, **_: object) -> str:
        return f"ShuffleNetV2 {model_size}"
