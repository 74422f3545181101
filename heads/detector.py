"""Assemble backbone, neck and head into one NanoDet module from an ArchSpec."""

from __future__ import annotations

import torch
from torch import nn

from heads.ghost_pan import GhostPAN
from heads.nanodet_head import NanoDetHead
from heads.nanodet_plus_head import NanoDetPlusHead
from heads.pan import PAN
from heads.shufflenetv2 import ShuffleNetV2
from heads.spec import ArchSpec

LevelLogits = list[tuple[torch.Tensor, torch.Tensor]]


class NanoDet(nn.Module):
    """backbone -> fpn -> head, with the official state_dict prefixes.

    `forward` returns per level (class logits [N,C,H,W], distance logits
    [N,4*(reg_max+1),H,W]) - raw, before sigmoid or softmax.
    """

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        b, n, h = spec.backbone, spec.neck, spec.head
        self.backbone = ShuffleNetV2(b.model_size, b.out_stages, b.with_last_conv, b.activation)
        if n.kind == "PAN":
            self.fpn = PAN(list(n.in_channels), n.out_channels)
        else:
            self.fpn = GhostPAN(list(n.in_channels), n.out_channels, n.use_depthwise,
                                n.kernel_size, n.num_extra_level, n.activation)
        if h.kind == "NanoDetHead":
            self.head = NanoDetHead(h.num_classes, h.input_channel, h.feat_channels,
                                    h.stacked_convs, h.strides, h.reg_max, h.share_cls_reg,
                                    h.kernel_size, h.depthwise, h.activation)
        else:
            self.head = NanoDetPlusHead(h.num_classes, h.input_channel, h.feat_channels,
                                        h.stacked_convs, h.kernel_size, h.strides, h.reg_max,
                                        h.depthwise, h.activation)

    def forward(self, x: torch.Tensor) -> LevelLogits:
        return self.head(self.fpn(self.backbone(x)))


def build_detector(spec: ArchSpec) -> NanoDet:
    return NanoDet(spec).eval()
