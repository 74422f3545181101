"""Export wrappers: what the ONNX graph computes, in each output layout.

* `LegacyLayout`: a legacy NanoDet model as the UnitV2 firmware reads it: per
  level `cls` = sigmoid(logits) as [1, H*W, C] and `dis` = raw logits as
  [1, H*W, 4*(reg_max+1)], sides l, t, r, b.
* `PlusNativeLayout`: NanoDet-Plus's own export: one [1, N, C + 4*(reg_max+1)]
  output, sigmoid applied, levels concatenated.
* `PlusToLegacy`: a NanoDet-Plus model rewritten into the legacy layout so
  that the firmware's decode - centres at (x+0.5)*stride, three levels -
  yields the Plus boxes. See `PlusToLegacy` for the two rewrites.

Every op here exists in the firmware's ncnn (early 2021) and no tensor has more
than 3 dims after the batch dim. Reductions over channels are written as
trees of `torch.maximum`: `torch.amax` would export to a Reduction whose axes
that ncnn reads differently.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from heads.detector import NanoDet

TWO_HOT_FLOOR = 1e-7  # probability floor of the two-hot bins (log: -16.1)
FOLD_SHARPNESS = 1e4  # score margins below 1e-4 blend the two predictions

Stride64 = Literal["fold", "drop"]


def flatten_cells(t: torch.Tensor) -> torch.Tensor:
    """[1, K, H, W] -> [1, H*W, K], row-major cells; -1 keeps H, W out of the graph."""
    return t.reshape(1, t.shape[1], -1).permute(0, 2, 1)


class LegacyLayout(nn.Module):
    """A legacy NanoDetHead model in the firmware's layout (no rewrite needed)."""

    def __init__(self, model: NanoDet):
        super().__init__()
        if model.spec.is_plus:
            raise ValueError("LegacyLayout takes a legacy NanoDetHead model; use PlusToLegacy")
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs: list[torch.Tensor] = []
        for cls, dis in self.model(x):
            outputs += [flatten_cells(torch.sigmoid(cls)), flatten_cells(dis)]
        return tuple(outputs)


class PlusNativeLayout(nn.Module):
    """NanoDet-Plus as its own exporter writes it: one concatenated output."""

    def __init__(self, model: NanoDet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [torch.cat([torch.sigmoid(cls), dis], 1).flatten(2) for cls, dis in self.model(x)]
        return torch.cat(levels, 2).permute(0, 2, 1)


def channel_max(x: torch.Tensor) -> torch.Tensor:
    """Max over dim 1 as a tree of elementwise maxima: [1, C, H, W] -> [1, 1, H, W]."""
    while x.shape[1] > 1:
        if x.shape[1] % 2:
            x = torch.cat([x, x[:, :1]], 1)  # a duplicate does not change the max
        half = x.shape[1] // 2
        x = torch.maximum(x[:, :half], x[:, half:])
    return x


def side_softmax(dis: torch.Tensor, bins: int) -> torch.Tensor:
    """Softmax over each side's bins: [1, 4*bins, H, W] -> probabilities, same shape."""
    return torch.cat([torch.softmax(side, dim=1) for side in dis.split(bins, dim=1)], 1)


def _expectation_conv(bins: int, scale: float, shift: tuple[float, ...]) -> nn.Conv2d:
    """1x1 conv: per side, scale * sum_k k * p_k + shift[side]."""
    conv = nn.Conv2d(4 * bins, 4, 1)
    with torch.no_grad():
        conv.weight.zero_()
        for side in range(4):
            conv.weight[side, side * bins:(side + 1) * bins, 0, 0] = scale * torch.arange(bins)
        conv.bias.copy_(torch.tensor(shift))
    return conv.requires_grad_(False)


def _bin_offset_conv(out_bins: int) -> nn.Conv2d:
    """1x1 conv: per side s and bin k, distance[s] - k."""
    conv = nn.Conv2d(4, 4 * out_bins, 1)
    with torch.no_grad():
        conv.weight.zero_()
        for side in range(4):
            conv.weight[side * out_bins:(side + 1) * out_bins, side, 0, 0] = 1.0
        conv.bias.copy_(-torch.arange(out_bins, dtype=torch.float32).repeat(4))
    return conv.requires_grad_(False)


def _distance_placement() -> torch.Tensor:
    """ConvTranspose weight [5, 4, 2, 2]: copy l, t, r, b; the 5th (ones) input adds the
    shift from the Plus centre to the firmware centre of output cell 2X-1 (k=0) or 2X (k=1).
    """
    weight = torch.zeros(5, 4, 2, 2)
    for side in range(4):
        weight[side, side] = 1.0
    towards = torch.tensor([-0.5, 0.5])  # l, t grow by 0.5 on the far side of the centre
    weight[4, 0] = towards.view(1, 2).expand(2, 2)  # left: by kx
    weight[4, 1] = towards.view(2, 1).expand(2, 2)  # top: by ky
    weight[4, 2] = -towards.view(1, 2).expand(2, 2)  # right
    weight[4, 3] = -towards.view(2, 1).expand(2, 2)  # bottom
    return weight


class PlusToLegacy(nn.Module):
    """NanoDet-Plus rewritten for a decoder that assumes legacy NanoDet geometry.

    Centre offset: Plus predicts distances from x*stride, the firmware measures
    them from (x+0.5)*stride. Per side the graph takes Plus's expected
    distance d (in strides), shifts it by +0.5 (left, top) or -0.5 (right,
    bottom), and emits a two-hot distribution over widened bins as log
    probabilities, log(max(1 - |d' - k|, floor)); the firmware's softmax and
    expectation give back d'. A right/bottom distance below half a stride
    cannot be shown from the firmware's centre: it clamps to 0 (residual).

    Stride 64 (`fold`): each stride-64 prediction is copied onto the 2x2
    stride-32 cells whose firmware centres surround its own centre, and
    replaces a cell's own prediction where its best class score is higher.
    Distances are re-expressed in stride-32 units, so all levels get
    2*reg_max+2 bins (the firmware reads reg_max from the width). `drop`
    discards stride 64 (reg_max+1 bins).

    `compensate=False` with `drop` is the naive rewrite (slices and sigmoid
    only), kept to show that parity checks catch it.
    """

    def __init__(self, model: NanoDet, stride64: Stride64 = "fold", compensate: bool = True):
        super().__init__()
        head = model.spec.head
        if not model.spec.is_plus or tuple(head.strides[:3]) != (8, 16, 32):
            raise ValueError("PlusToLegacy takes a NanoDet-Plus model with strides 8/16/32(/64)")
        if stride64 == "fold" and len(head.strides) < 4:
            raise ValueError("stride64='fold' needs a stride-64 level")
        if stride64 == "fold" and not compensate:
            raise ValueError("folding stride 64 needs the centre compensation")
        self.model = model
        self.fold = stride64 == "fold"
        self.compensate = compensate
        self.bins = head.reg_max + 1
        reg_max_out = (2 * head.reg_max + 1 if self.fold else head.reg_max + 1) if compensate \
            else head.reg_max
        self.out_bins = reg_max_out + 1
        self.expect = _expectation_conv(self.bins, 1.0, (0.5, 0.5, -0.5, -0.5))
        self.expect64 = _expectation_conv(self.bins, 2.0, (0.0, 0.0, 0.0, 0.0))
        self.two_hot_offsets = _bin_offset_conv(self.out_bins)
        self.register_buffer("place_scores", torch.ones(head.num_classes + 1, 1, 2, 2),
                             persistent=False)
        self.register_buffer("place_distances", _distance_placement(), persistent=False)

    @property
    def reg_max_out(self) -> int:
        return self.out_bins - 1

    def two_hot_logits(self, distance: torch.Tensor) -> torch.Tensor:
        """[1, 4, H, W] distances (strides) -> [1, 4*out_bins, H, W] log-probabilities."""
        hat = 1.0 - self.two_hot_offsets(distance).abs()
        return torch.log(torch.clamp(hat, TWO_HOT_FLOOR, 1.0))

    def fold_stride64(self, cls32: torch.Tensor, dist32: torch.Tensor, cls64: torch.Tensor,
                      dist64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy stride-64 predictions onto stride-32 cells where they score higher.

        Stride-64 cell X goes to stride-32 cells 2X-1 and 2X (likewise in y): the
        four cells whose firmware centres, 64X -+ 16 px, surround the Plus centre
        64X. `dist64` is 2*d in stride-32 units from the Plus centre; the copy
        adds -+0.5 per side according to the cell's side of the centre. Copies of
        one prediction are identical boxes, so the firmware's NMS keeps one.
        """
        score32 = channel_max(cls32)
        scores64 = torch.cat([cls64, channel_max(cls64)], 1)
        cls_up = self._place(scores64, self.place_scores[:scores64.shape[1]], cls32)
        ones = dist64[:, :1] * 0.0 + 1.0
        dist_up = self._place(torch.cat([dist64, ones], 1), self.place_distances, cls32)
        num_classes = cls32.shape[1]
        take = torch.clamp((cls_up[:, num_classes:] - score32) * FOLD_SHARPNESS, 0.0, 1.0)
        cls = cls32 + take * (cls_up[:, :num_classes] - cls32)
        return cls, dist32 + take * (dist_up - dist32)

    @staticmethod
    def _place(x: torch.Tensor, weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ConvTranspose k=2, s=2, pad=1: input cell X -> output cells 2X-1, 2X."""
        groups = x.shape[1] if weight.shape[1] == 1 and weight.shape[0] == x.shape[1] else 1
        out = F.conv_transpose2d(x, weight, stride=2, padding=1, output_padding=1,
                                 groups=groups)  # 2*H64 - 1 rows
        missing_h = like.shape[2] - out.shape[2]  # 1 for even stride-32 grids, 0 for odd
        missing_w = like.shape[3] - out.shape[3]
        if missing_h or missing_w:
            out = F.pad(out, (0, missing_w, 0, missing_h))
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels = self.model(x)
        outputs: list[torch.Tensor] = []
        for index, (cls_logits, dis) in enumerate(levels[:3]):
            cls = torch.sigmoid(cls_logits)
            if not self.compensate:
                outputs += [flatten_cells(cls), flatten_cells(dis)]
                continue
            dist = self.expect(side_softmax(dis, self.bins))
            if index == 2 and self.fold:
                cls64_logits, dis64 = levels[3]
                dist64 = self.expect64(side_softmax(dis64, self.bins))
                cls, dist = self.fold_stride64(cls, dist, torch.sigmoid(cls64_logits), dist64)
            outputs += [flatten_cells(cls), flatten_cells(self.two_hot_logits(dist))]
        return tuple(outputs)
