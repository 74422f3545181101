"""Convolution blocks with NanoDet's module names (nanodet/model/module/conv.py)."""

from __future__ import annotations

import torch
from torch import nn

from heads.activations import activation_layer


class ConvModule(nn.Module):
    """conv -> bn (optional) -> act (optional); keys `conv.*`, `bn.*`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, use_norm: bool = True, activation: str | None = "ReLU"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              bias=not use_norm)
        if use_norm:
            self.bn = nn.BatchNorm2d(out_channels)
        self.act = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.act(x)


class DepthwiseConvModule(nn.Module):
    """depthwise -> dwnorm -> act -> pointwise -> pwnorm -> act."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, activation: str | None = "ReLU"):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dwnorm = nn.BatchNorm2d(in_channels)
        self.pwnorm = nn.BatchNorm2d(out_channels)
        self.act = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))
