"""Legacy NanoDet neck: PAN (nanodet/model/fpn/pan.py, on fpn.py).

1x1 lateral convs with bias and no norm or activation, a top-down pass with
bilinear x2 upsampling, a bottom-up pass with bilinear x0.5 downsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from heads.conv_modules import ConvModule


class PAN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, use_norm=False, activation=None) for c in in_channels
        )

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], scale_factor=2.0, mode="bilinear")
        outs = list(laterals)
        for i in range(len(outs) - 1):
            outs[i + 1] = outs[i + 1] + F.interpolate(outs[i], scale_factor=0.5, mode="bilinear")
        return outs
