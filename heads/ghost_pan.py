"""NanoDet-Plus neck: GhostPAN (nanodet/model/fpn/ghost_pan.py, ghostnet.py)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from heads.activations import activation_layer
from heads.component import Keywords, Neck
from heads.conv_modules import ConvModule, DepthwiseConvModule
from heads.pan import PAN
from heads.schema import ACTIVATION, Schema, boolean, integer
from heads.weights import ASSUMED_ACTIVATION, StateDict, count, odd_kernel, shape


class GhostModule(nn.Module):
    def __init__(self, inp: int, oup: int, kernel_size: int = 1, ratio: int = 2,
                 dw_size: int = 3, activation: str | None = "ReLU"):
        super().__init__()
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, kernel_size, 1, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_channels),
            activation_layer(activation),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2,
                      groups=init_channels, bias=False),
            nn.BatchNorm2d(new_channels),
            activation_layer(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)


class GhostBottleneck(nn.Module):
    """Stride-1 GhostNet bottleneck without squeeze-excite, as GhostPAN uses it."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int,
                 activation: str):
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, activation=activation)
        self.ghost2 = GhostModule(mid_chs, out_chs, activation=None)
        pad = (dw_kernel_size - 1) // 2
        if in_chs == out_chs:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, 1, pad, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)


class GhostBlocks(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str):
        super().__init__()
        self.blocks = nn.Sequential(
            GhostBottleneck(in_channels, out_channels, out_channels, kernel_size, activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class GhostPAN(Neck):
    CONFIG_KEYS: ClassVar[Schema] = {**PAN.CONFIG_KEYS, "kernel_size": integer(1, 9, odd=True),
                                     "num_extra_level": integer(0, 2), "use_depthwise": boolean,
                                     "activation": ACTIVATION}
    WEIGHTS_HINT = "GhostPAN (fpn.reduce_layers + fpn.top_down_blocks)"
    WEIGHTS_PREFIX = "fpn.reduce_layers."

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, kernel_size: int = 5,
                 num_extra_level: int = 0, use_depthwise: bool = False,
                 activation: str = "LeakyReLU"):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
        down_conv = DepthwiseConvModule if use_depthwise else ConvModule
        pad = kernel_size // 2
        levels = len(in_channels)
        self.reduce_layers = nn.ModuleList(
            ConvModule(c, out_channels, 1, activation=activation) for c in in_channels)
        self.top_down_blocks = nn.ModuleList(
            GhostBlocks(out_channels * 2, out_channels, kernel_size, activation)
            for _ in range(levels - 1))
        self.downsamples = nn.ModuleList(
            down_conv(out_channels, out_channels, kernel_size, 2, pad, activation=activation)
            for _ in range(levels - 1))
        self.bottom_up_blocks = nn.ModuleList(
            GhostBlocks(out_channels * 2, out_channels, kernel_size, activation)
            for _ in range(levels - 1))
        self.extra_lvl_in_conv = nn.ModuleList(
            down_conv(out_channels, out_channels, kernel_size, 2, pad, activation=activation)
            for _ in range(num_extra_level))
        self.extra_lvl_out_conv = nn.ModuleList(
            down_conv(out_channels, out_channels, kernel_size, 2, pad, activation=activation)
            for _ in range(num_extra_level))

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        inputs = [reduce(x) for reduce, x in zip(self.reduce_layers, inputs)]
        levels = len(inputs)
        inner = [inputs[-1]]
        for idx in range(levels - 1, 0, -1):
            block = self.top_down_blocks[levels - 1 - idx]
            inner.insert(0, block(torch.cat([self.upsample(inner[0]), inputs[idx - 1]], 1)))
        outs = [inner[0]]
        for idx in range(levels - 1):
            down = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([down, inner[idx + 1]], 1)))
        for extra_in, extra_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv):
            outs.append(extra_in(inputs[-1]) + extra_out(outs[-1]))
        return outs

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if "fpn.reduce_layers.0.conv.weight" not in sd or \
                "fpn.top_down_blocks.0.blocks.0.ghost1.primary_conv.0.weight" not in sd:
            return None
        n = count(sd, "fpn.reduce_layers")
        shapes = [shape(sd, f"fpn.reduce_layers.{i}.conv.weight") for i in range(n)]
        depthwise = "fpn.downsamples.0.depthwise.weight" in sd
        down_key = "fpn.downsamples.0.depthwise.weight" if depthwise else \
            "fpn.downsamples.0.conv.weight"
        return {"in_channels": tuple(s[1] for s in shapes), "out_channels": shapes[0][0],
                "kernel_size": odd_kernel(shape(sd, down_key), down_key),
                "num_extra_level": count(sd, "fpn.extra_lvl_in_conv"),
                "use_depthwise": depthwise, "activation": ASSUMED_ACTIVATION}
