"""Legacy NanoDet head (nanodet/model/head/nanodet_head.py, on gfl_head.py).

Per level: stacked 3x3 depthwise convs, then one 1x1 `gfl_cls` conv. With
`share_cls_reg` (the released models) `gfl_cls` predicts classes and box
distributions together and `gfl_reg` exists in the state_dict but is unused.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from heads.component import Head, Keywords
from heads.conv_modules import ConvModule, DepthwiseConvModule
from heads.schema import ACTIVATION, CHANNELS, Schema, boolean, choice, integer, integers
from heads.weights import (
    ASSUMED_ACTIVATION,
    StateDict,
    UnknownArchitecture,
    count,
    has_prefix,
    odd_kernel,
    shape,
)

# config keys both heads read; conv_type DWConv/Conv sets the `depthwise` keyword
GFL_HEAD_KEYS = {
    "num_classes": integer(1, 10_000),
    "input_channel": CHANNELS,
    "stacked_convs": integer(1, 8),
    "strides": integers(1, 1024, max_len=5),
    "conv_type": choice(("DWConv", "Conv"), "a NanoDet conv_type"),
    "activation": ACTIVATION,
}


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


def depthwise_from_conv_type(values: Keywords) -> Keywords:
    """Config values with NanoDet's conv_type turned into the `depthwise` keyword."""
    values = dict(values)
    if "conv_type" in values:
        values["depthwise"] = values.pop("conv_type") == "DWConv"
    return values


def gfl_head_keywords(sd: StateDict, strides: tuple[int, ...], plus: bool) -> Keywords:
    """The keywords of a NanoDet(-Plus) head in `sd` for levels of `strides`."""
    reg_max = shape(sd, "head.distribution_project.project", ndim=1)[0] - 1
    if reg_max < 1:
        raise UnknownArchitecture("head.distribution_project.project has fewer than 2 bins")
    bins = 4 * (reg_max + 1)
    n_levels = count(sd, "head.gfl_cls")
    if n_levels != len(strides):
        raise UnknownArchitecture(f"head has {n_levels} levels but the neck gives "
                                  f"{len(strides)}")
    stacked = count(sd, "head.cls_convs.0")
    depthwise = "head.cls_convs.0.0.depthwise.weight" in sd
    first_key = "head.cls_convs.0.0.depthwise.weight" if depthwise \
        else "head.cls_convs.0.0.conv.weight"
    first = shape(sd, first_key)
    feat = shape(sd, "head.gfl_cls.0.weight")[1]
    cls_out = shape(sd, "head.gfl_cls.0.weight")[0]
    share = plus or not has_prefix(sd, "head.reg_convs.")
    num_classes = cls_out - bins if share else cls_out
    if num_classes <= 0:
        raise UnknownArchitecture(f"head.gfl_cls has {cls_out} outputs, fewer than the "
                                  f"{bins} distance bins of reg_max {reg_max}")
    return {"num_classes": num_classes, "input_channel": first[0] if depthwise else first[1],
            "feat_channels": feat, "stacked_convs": stacked,
            "kernel_size": odd_kernel(first, first_key), "strides": strides,
            "reg_max": reg_max, "share_cls_reg": share, "depthwise": depthwise,
            "activation": ASSUMED_ACTIVATION}


class NanoDetHead(Head):
    centre_offset = 0.5  # priors at (x + 0.5) * stride
    CONFIG_KEYS: ClassVar[Schema] = {**GFL_HEAD_KEYS, "feat_channels": CHANNELS,
                                     "reg_max": integer(1, 64), "share_cls_reg": boolean}
    WEIGHTS_HINT = "NanoDetHead (head.gfl_reg)"
    WEIGHTS_PREFIX = "head.gfl_reg."

    def __init__(self, num_classes: int, input_channel: int, feat_channels: int = 256,
                 stacked_convs: int = 2, kernel_size: int = 3,
                 strides: tuple[int, ...] = (8, 16, 32), reg_max: int = 16,
                 share_cls_reg: bool = False, depthwise: bool = True,
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

    @classmethod
    def keywords_from_config(cls, values: Keywords) -> Keywords:
        return depthwise_from_conv_type(values)

    @classmethod
    def keywords_from_weights(cls, sd: StateDict, strides: tuple[int, ...]) -> Keywords | None:
        if not has_prefix(sd, "head.gfl_reg."):
            return None
        return gfl_head_keywords(sd, strides, plus=False)
