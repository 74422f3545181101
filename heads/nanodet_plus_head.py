"""NanoDet-Plus head (nanodet/model/head/nanodet_plus_head.py).

Per level: stacked 5x5 depthwise convs and one 1x1 `gfl_cls` conv predicting
classes and box distributions together; no `gfl_reg`, no `reg_convs`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from heads.component import Head, Keywords
from heads.nanodet_head import (
    GFL_HEAD_KEYS,
    Integral,
    conv_stack,
    depthwise_from_conv_type,
    gfl_head_keywords,
)
from heads.schema import CHANNELS, Schema, integer
from heads.weights import StateDict, has_prefix


class NanoDetPlusHead(Head):
    centre_offset = 0.0  # priors at x * stride
    CONFIG_KEYS: ClassVar[Schema] = {**GFL_HEAD_KEYS, "feat_channels": CHANNELS,
                                     "kernel_size": integer(1, 9, odd=True),
                                     "reg_max": integer(1, 64)}
    WEIGHTS_HINT = "NanoDetPlusHead (head.gfl_cls without head.gfl_reg)"
    WEIGHTS_PREFIX = "head.gfl_cls."

    def __init__(self, num_classes: int, input_channel: int, feat_channels: int = 96,
                 stacked_convs: int = 2, kernel_size: int = 5,
                 strides: tuple[int, ...] = (8, 16, 32), reg_max: int = 7,
                 share_cls_reg: bool = True, depthwise: bool = True,
                 activation: str = "LeakyReLU"):
        super().__init__()
        if not share_cls_reg:
            raise ValueError("NanoDetPlusHead always predicts classes and boxes with one conv")
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)
        self.cls_convs = nn.ModuleList(
            conv_stack(input_channel, feat_channels, stacked_convs, kernel_size, depthwise,
                       activation)
            for _ in self.strides)
        self.gfl_cls = nn.ModuleList(
            nn.Conv2d(feat_channels, num_classes + 4 * (reg_max + 1), 1) for _ in self.strides)
        self.distribution_project = Integral(reg_max)

    def forward(self, feats: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level (class logits [N,C,H,W], distance logits [N,4(R+1),H,W])."""
        outputs = []
        for x, convs, gfl_cls in zip(feats, self.cls_convs, self.gfl_cls):
            for conv in convs:
                x = conv(x)
            out = gfl_cls(x)
            outputs.append((out[:, :self.num_classes], out[:, self.num_classes:]))
        return outputs

    @classmethod
    def keywords_from_config(cls, values: Keywords) -> Keywords:
        return depthwise_from_conv_type(values)

    @classmethod
    def keywords_from_weights(cls, sd: StateDict, strides: tuple[int, ...]) -> Keywords | None:
        if has_prefix(sd, "head.gfl_reg."):
            return None
        return gfl_head_keywords(sd, strides, plus=True)
