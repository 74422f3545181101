"""Legacy NanoDet head (nanodet/model/head/nanodet_head.py, on gfl_head.py).

Per level: stacked 3x3 depthwise convs, then one 1x1 `gfl_cls` conv. With
`share_cls_reg` (the released models) `gfl_cls` predicts classes and box
distributions together and `gfl_reg` exists in the state_dict but is unused.
"""

from __future__ import annotations

import torch
from torch import nn

from heads.conv_modules import ConvModule, DepthwiseConvModule


class Integral(nn.Module):
    """Holds the `distribution_project.project` buffer: bin values 0..reg_max."""

    def __init__(self, reg_max: int):
        super().__init__()
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))


def conv_stack(in_channels: int, feat_channels: int, count: int, kernel_size: int,
                  depthwise: bool, activation: str) -> nn.ModuleList:
    conv = DepthwiseConvModule if depthwise else ConvModule
    return nn.ModuleList(
        conv(in_channels if i == 0 else feat_channels, feat_channels, kernel_size, 1,
             kernel_size // 2, activation=activation)
        for i in range(count))


class NanoDetHead(nn.Module):
    centre_offset = 0.5  # priors at (x + 0.5) * stride

    def __init__(self, num_classes: int, input_channel: int, feat_channels: int = 96,
                 stacked_convs: int = 2, strides: tuple[int, ...] = (8, 16, 32), reg_max: int = 7,
                 share_cls_reg: bool = True, kernel_size: int = 3, depthwise: bool = True,
                 activation: str = "LeakyReLU"):
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)
        self.share_cls_reg = share_cls_reg
        bins = 4 * (reg_max + 1)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for _ in self.strides:
            self.cls_convs.append(conv_stack(input_channel, feat_channels, stacked_convs,
                                             kernel_size, depthwise, activation))
            self.reg_convs.append(nn.ModuleList() if share_cls_reg else conv_stack(
                input_channel, feat_channels, stacked_convs, kernel_size, depthwise, activation))
        cls_out = num_classes + bins if share_cls_reg else num_classes
        self.gfl_cls = nn.ModuleList(nn.Conv2d(feat_channels, cls_out, 1) for _ in self.strides)
        self.gfl_reg = nn.ModuleList(nn.Conv2d(feat_channels, bins, 1) for _ in self.strides)
        self.distribution_project = Integral(reg_max)

    def forward(self, feats: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level (class logits [N,C,H,W], distance logits [N,4(R+1),H,W])."""
        outputs = []
        for i, x in enumerate(feats):
            cls_feat = x
            for conv in self.cls_convs[i]:
                cls_feat = conv(cls_feat)
            if self.share_cls_reg:
                out = self.gfl_cls[i](cls_feat)
                outputs.append((out[:, :self.num_classes], out[:, self.num_classes:]))
                continue
            reg_feat = x
            for conv in self.reg_convs[i]:
                reg_feat = conv(reg_feat)
            outputs.append((self.gfl_cls[i](cls_feat), self.gfl_reg[i](reg_feat)))
        return outputs

