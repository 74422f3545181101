"""Legacy NanoDet neck: PAN (nanodet/model/fpn/pan.py, on fpn.py).

1x1 lateral convs with bias and no norm or activation, a top-down pass with
bilinear x2 upsampling, a bottom-up pass with bilinear x0.5 downsampling.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from heads.component import Keywords, Neck
from heads.conv_modules import ConvModule
from heads.schema import CHANNELS, Schema, integers
from heads.weights import StateDict, count, shape


class PAN(Neck):
    """The keywords after out_channels are fixed: they describe PAN in GhostPAN's terms."""

    CONFIG_KEYS: ClassVar[Schema] = {"in_channels": integers(1, 4096, max_len=3),
                                     "out_channels": CHANNELS}
    WEIGHTS_HINT = "PAN (fpn.lateral_convs)"
    WEIGHTS_PREFIX = "fpn.lateral_convs."

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, kernel_size: int = 1,
                 num_extra_level: int = 0, use_depthwise: bool = False,
                 activation: str | None = None):
        super().__init__()
        if (kernel_size, num_extra_level, use_depthwise, activation) != (1, 0, False, None):
            raise ValueError("PAN has 1x1 lateral convs without activation and no extra levels")
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

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if "fpn.lateral_convs.0.conv.weight" not in sd or "fpn.lateral_convs.0.bn.weight" in sd:
            return None  # no PAN, or a neck whose laterals are normalised (TAN's)
        n = count(sd, "fpn.lateral_convs")
        shapes = [shape(sd, f"fpn.lateral_convs.{i}.conv.weight") for i in range(n)]
        return {"in_channels": tuple(s[1] for s in shapes), "out_channels": shapes[0][0]}
