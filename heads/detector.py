"""Assemble backbone, neck and head into one NanoDet module from an ArchSpec."""

from __future__ import annotations

import torch
from torch import nn

from heads.registry import BACKBONES, HEADS, NECKS, build
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
        self.backbone = build(BACKBONES, spec.backbone.kind, spec.backbone.keywords())
        self.fpn = build(NECKS, spec.neck.kind, spec.neck.keywords())
        self.head = build(HEADS, spec.head.kind, spec.head.keywords())

    def forward(self, x: torch.Tensor) -> LevelLogits:
        return self.head(self.fpn(self.backbone(x)))


def build_detector(spec: ArchSpec) -> NanoDet:
    return NanoDet(spec).eval()
