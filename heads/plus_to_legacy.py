"""NanoDet-Plus rewritten into the legacy NanoDet layout the UnitV2 firmware decodes.

The firmware decodes three levels with centres at (x+0.5)*stride; Plus has
four levels with centres at x*stride. `PlusToLegacy` rewrites both inside the
graph so that the firmware's own softmax-and-expectation decode yields the
Plus boxes.

Every op here exists in the firmware's ncnn (early 2021) and no tensor has more
than 3 dims after the batch dim. The max over classes is a max pooling, not
`torch.amax`, whose Reduction that ncnn reads on other axes. The stride-64 fold
places cells with depthwise transposed convolutions only: current ncnn runs a full
Deconvolution through its general matrix multiply, whose fixed cost on these few
cells measured 1.5-2.5 % of the whole seeded NanoDet-Plus-m 320 in pip ncnn (one
1->1 channel Deconvolution alone cost as much). README, Architectures, has what the
fold costs on each backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heads.decode import LevelOutput, expected_distances
from heads.detector import LevelLogits, NanoDet
from heads.export import flatten_cells
from heads.spec import ArchSpec

DISTRIBUTION_FLOOR = 1e-7  # probability of the unused bins (log: -16.1)
FOLD_SHARPNESS = 1e4  # score margins below 1e-4 blend the two predictions
HALF_STRIDE = 0.5  # the firmware's cell centre lies this far right of and below Plus's

Stride64 = Literal["fold", "drop"]


def class_max_pair(first: torch.Tensor, second: torch.Tensor,
                   classes: int | None = None) -> torch.Tensor:
    """Two [1, K, H, W] -> [1, 2, H, W]: the max over the first `classes` channels (all by
    default) of each, per cell, in one pool.

    Channels moved innermost side by side and max-pooled (1 x classes) with stride K:
    exact, and safe where torch.amax would export to a Reduction whose axes the
    firmware's ncnn reads differently.
    """
    width = first.shape[1]
    inner = torch.cat([first, second], 1).permute(0, 2, 3, 1)
    pooled = F.max_pool2d(inner, kernel_size=(1, classes or width), stride=(1, width))
    return pooled.permute(0, 3, 1, 2)


def side_softmax(dis: torch.Tensor, bins: int) -> torch.Tensor:
    """Softmax over each side's bins: [1, 4*bins, H, W] -> probabilities, same shape
    (`side_softmax_flat` put back on the grid, for the stride-64 fold; the return
    Reshape holds the grid's size)."""
    _, channels, height, width = dis.shape
    return side_softmax_flat(dis, bins).reshape(1, channels, height, width)


def side_softmax_flat(dis: torch.Tensor, bins: int) -> torch.Tensor:
    """Softmax over each side's bins with the cells in a row: [1, 4*bins, H, W] ->
    [1, 4*bins, 1, H*W] (what 1x1 convs and flatten_cells take; -1 keeps H and W out
    of the graph).

    One Softmax over the bins of a [1, 4, bins, H*W] view (3 dims after the batch, as
    the firmware's ncnn allows) instead of four on channel slices: the same values, and
    with `side_softmax` on the fold's path, the legacy NanoDet-Plus-m ~1.3 % of the
    whole model faster in pip ncnn (1.2-1.7 % over the native export instead of 2.3-3.5
    %, paired rounds): fewer small layers, no Slice and Concat of packed channels."""
    sides = dis.reshape(1, 4, bins, -1)
    return torch.softmax(sides, dim=2).reshape(1, 4 * bins, 1, -1)


def _expectation_conv(bins: int, scale: float, shift: tuple[float, ...],
                      ones: int = 0) -> nn.Conv2d:
    """1x1 conv: per side, scale * sum_k k * p_k + shift[side], then `ones` channels of 1."""
    conv = nn.Conv2d(4 * bins, 4 + ones, 1)
    with torch.no_grad():
        conv.weight.zero_()
        for side in range(4):
            conv.weight[side, side * bins:(side + 1) * bins, 0, 0] = scale * torch.arange(bins)
        conv.bias.copy_(torch.tensor([*shift, *[1.0] * ones]))
    return conv.requires_grad_(False)


def _endpoint_conv(bins: int) -> nn.Conv2d:
    """1x1 conv: per side s, [1 - d[s]/K, d[s]/K] with K = bins - 1 (low halves first)."""
    top = bins - 1
    conv = nn.Conv2d(4, 8, 1)
    with torch.no_grad():
        conv.weight.zero_()
        for side in range(4):
            conv.weight[side, side, 0, 0] = -1.0 / top
            conv.weight[4 + side, side, 0, 0] = 1.0 / top
        conv.bias.copy_(torch.tensor([1.0] * 4 + [0.0] * 4))
    return conv.requires_grad_(False)


def _spread_conv(bins: int) -> nn.Conv2d:
    """1x1 conv: [log p_0, log p_K] per side -> all bins, the inner ones at the floor."""
    top = bins - 1
    conv = nn.Conv2d(8, 4 * bins, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(math.log(DISTRIBUTION_FLOOR))
        for side in range(4):
            conv.weight[side * bins, side, 0, 0] = 1.0
            conv.weight[side * bins + top, 4 + side, 0, 0] = 1.0
            conv.bias[side * bins] = conv.bias[side * bins + top] = 0.0
    return conv.requires_grad_(False)


def _three_taps(weight: torch.Tensor) -> torch.Tensor:
    """A 2x2 transposed-conv kernel as 3x3 with a zero third tap (see `_place`)."""
    return F.pad(weight, (0, 1, 0, 1))


def _centre_shifts() -> torch.Tensor:
    """[4, 2, 2]: per side, what the distance from the Plus centre 64X gains when measured
    from the firmware centre of output cell 2X-1 (tap 0) or 2X (tap 1), in strides of 32:
    l, t grow by 0.5 on the far side of the centre, r, b shrink by as much."""
    towards = torch.tensor([-0.5, 0.5])
    across, down = towards.view(1, 2).expand(2, 2), towards.view(2, 1).expand(2, 2)
    return torch.stack([across, down, -across, -down])


def _fold_placement(classes: int) -> torch.Tensor:
    """Depthwise ConvTranspose weight [C+8, 1, 3, 3] for [classes, 2d (4), ones (4)]:
    classes and distances copied onto both stride-32 cells of each axis, each ones channel
    turned into its side's centre shift (`_centre_shifts`)."""
    taps = torch.ones(classes + 8, 1, 2, 2)
    taps[classes + 4:, 0] = _centre_shifts()
    return _three_taps(taps)


def _moved_endpoints(classes: int, endpoints: nn.Conv2d) -> nn.Conv2d:
    """1x1 conv on placed [classes, d (4), shift (4)]: classes as they are, then
    `endpoints` (an `_endpoint_conv`) of D = d + shift."""
    conv = nn.Conv2d(classes + 8, classes + 8, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:classes, :classes] = torch.eye(classes)[:, :, None, None]
        conv.weight[classes:, classes:classes + 4] = endpoints.weight
        conv.weight[classes:, classes + 4:] = endpoints.weight  # the shift adds to d
        conv.bias.copy_(torch.cat([torch.zeros(classes), endpoints.bias]))
    return conv.requires_grad_(False)


def _score_gap_conv(channels: int) -> nn.Conv2d:
    """1x1 conv on [score32, score64] -> K * (score64 - score32), K = FOLD_SHARPNESS, on
    `channels` channels alike, the width of what it gates: the transposed conv that
    spreads its block max exports as a depthwise one only with more than one channel,
    and a full Deconvolution is what the fold avoids (module docstring)."""
    conv = nn.Conv2d(2, channels, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-FOLD_SHARPNESS, FOLD_SHARPNESS]).view(1, 2, 1, 1)
                          .expand(channels, 2, 1, 1))
        conv.bias.zero_()
    return conv.requires_grad_(False)


def _compose(first: nn.Conv2d, second: nn.Conv2d) -> nn.Conv2d:
    """The 1x1 conv equal to `second(first(x))`."""
    conv = nn.Conv2d(first.in_channels, second.out_channels, 1)
    with torch.no_grad():
        w1, w2 = first.weight[:, :, 0, 0], second.weight[:, :, 0, 0]
        conv.weight.copy_((w2 @ w1)[:, :, None, None])
        conv.bias.copy_(w2 @ first.bias + second.bias)
    return conv.requires_grad_(False)


def distance_logits(endpoints: nn.Conv2d, spread: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax expectation is the distance d: mass d/K on bin K, 1 - d/K on 0.

    Only 8 logarithms per cell; the clamp fuses into the conv as ncnn's Clip
    activation and keeps d < 0 (a right/bottom edge left of the firmware centre)
    at 0. The inner bins sit at the floor probability.
    """
    return spread(torch.log(torch.clamp(endpoints(x), DISTRIBUTION_FLOOR, 1.0)))


def options_problem(stride64: str, compensate: bool) -> str | None:
    """Why this stride-64 choice and centre compensation cannot go together, or None."""
    if stride64 not in ("fold", "drop"):
        return f"stride64 must be fold or drop, not {stride64!r}"
    if stride64 == "fold" and not compensate:
        return "folding stride 64 needs the centre compensation"
    return None


def model_problem(spec: ArchSpec, stride64: Stride64) -> str | None:
    """Why the rewrite cannot take a model of this architecture, or None."""
    if not spec.is_plus or tuple(spec.head.strides[:3]) != (8, 16, 32):
        return "PlusToLegacy takes a NanoDet-Plus model with strides 8/16/32(/64)"
    if stride64 == "fold" and len(spec.head.strides) < 4:
        return "stride64='fold' needs a stride-64 level"
    return None


def output_reg_max(reg_max: int, stride64: Stride64, compensate: bool) -> tuple[int, ...]:
    """reg_max per legacy level (strides 8, 16, 32) as the firmware infers it from the dis
    width: one more bin for the centre shift, twice as many at stride 32 when it holds the
    folded stride-64 predictions (in stride-32 units)."""
    widened = reg_max + 1 if compensate else reg_max  # room for d + 0.5
    return widened, widened, 2 * reg_max + 1 if stride64 == "fold" else widened


class PlusToLegacy(nn.Module):
    """NanoDet-Plus rewritten for a decoder that assumes legacy NanoDet geometry.

    Centre offset: Plus predicts distances from x*stride, the firmware measures
    them from (x+0.5)*stride. Per side the graph takes Plus's expected
    distance d (in strides), shifts it by +0.5 (left, top) or -0.5 (right,
    bottom), and emits logits of a distribution over K+1 widened bins with
    mass d'/K on bin K and 1 - d'/K on bin 0; the firmware's softmax and
    expectation give back d'. A right/bottom distance below half a stride
    cannot be shown from the firmware's centre: it clamps to 0 (residual).

    Stride 64 (`fold`): each stride-64 prediction goes to the weakest of the 2x2
    stride-32 cells whose firmware centres surround its own centre, replacing
    that cell's own prediction if its best class score is higher.
    Distances are re-expressed in stride-32 units, so stride 32 gets
    2*reg_max+2 bins; strides 8 and 16 get reg_max+2 (the firmware reads
    reg_max per level from the dis width). `drop` discards stride 64.

    `compensate=False` with `drop` is the naive rewrite (slices and sigmoid
    only), kept to show that parity checks catch it.
    """

    def __init__(self, model: NanoDet, stride64: Stride64 = "fold", compensate: bool = True):
        super().__init__()
        head = model.spec.head
        problem = model_problem(model.spec, stride64) or options_problem(stride64, compensate)
        if problem:
            raise ValueError(problem)
        self.model = model
        self.num_classes = head.num_classes
        self.fold = stride64 == "fold"
        self.compensate = compensate
        self.bins = head.reg_max + 1
        self.level_bins = tuple(k + 1 for k in output_reg_max(head.reg_max, stride64, compensate))
        self.expect = _expectation_conv(self.bins, 1.0, (0.5, 0.5, -0.5, -0.5))
        # stride 64: 2d in stride-32 units, and four channels of ones for the centre shifts
        self.expect64 = _expectation_conv(self.bins, 2.0, (0.0, 0.0, 0.0, 0.0), ones=4)
        self.endpoints = nn.ModuleList(_endpoint_conv(b) for b in self.level_bins)
        self.spread = nn.ModuleList(_spread_conv(b) for b in self.level_bins)
        # softmax probabilities -> endpoint masses in one 1x1 conv per level
        self.direct = nn.ModuleList(_compose(self.expect, conv) for conv in self.endpoints)
        width = head.num_classes + 8  # classes and endpoint masses, as the fold moves them
        self.register_buffer("place64", _fold_placement(head.num_classes), persistent=False)
        self.moved_endpoints = _moved_endpoints(head.num_classes, self.endpoints[2])
        self.score_gap = _score_gap_conv(width)
        self.register_buffer("block_spread", torch.ones(width, 1, 2, 2), persistent=False)

    @property
    def reg_max_out(self) -> tuple[int, ...]:
        """reg_max the firmware infers per level from the dis width."""
        return tuple(b - 1 for b in self.level_bins)

    def fold_stride64(self, own: torch.Tensor, cls64: torch.Tensor, dist64: torch.Tensor
                      ) -> torch.Tensor:
        """Put each stride-64 prediction on the weakest of its four stride-32 cells.

        Stride-64 cell X belongs to stride-32 cells 2X-1 and 2X (likewise in y):
        the four cells whose firmware centres, 64X -+ 16 px, surround the Plus
        centre 64X. The prediction replaces the cell of that block whose own best
        score is lowest, if it scores higher, so it survives whenever it beats any
        of the four and costs the fewest own predictions.

        `own` is stride 32's [class probabilities, endpoint masses (8)]; `dist64` holds
        2*d in stride-32 units from the Plus centre and four channels of ones, which the
        placement turns into each cell's -+0.5 per side. Returns `own` with the taken
        cells replaced by the moved predictions in the same form.
        """
        moved = torch.clamp(self.moved_endpoints(self._place(torch.cat([cls64, dist64], 1),
                                                            self.place64, own)),
                            DISTRIBUTION_FLOOR, 1.0)
        take = self._take(class_max_pair(own, moved, self.num_classes))
        return own + take * (moved - own)

    def _take(self, scores: torch.Tensor) -> torch.Tensor:
        """1 where a stride-32 cell takes the stride-64 prediction, else 0, on every channel.

        gap = K * (score64 - score32) per cell (K = FOLD_SHARPNESS); its max over the
        block {2X-1, 2X} is the gap at the block's weakest cell, where `behind` (block
        max - gap) is exactly 0; at the other cells it is K times their lead, >= 1 unless
        they lead by under 1/K. take = clamp(min(gap, 1 - behind)): 1 at the weakest cell
        when score64 beats it by 1/K, 0 elsewhere; closer scores blend. `behind` is taken
        before the 1 is added: at fp16 precision a gap of thousands would swallow it.
        """
        gap = self.score_gap(scores)
        block_max = F.max_pool2d(gap, 2, 2, padding=1)  # blocks {2X-1, 2X}: padded before
        spread = F.conv_transpose2d(block_max, self.block_spread, stride=2, padding=1,
                                    groups=gap.shape[1],
                                    output_padding=(gap.shape[2] % 2, gap.shape[3] % 2))
        behind = spread - gap
        return torch.clamp(torch.minimum(gap, 1.0 - behind), 0.0, 1.0)

    @staticmethod
    def _place(x: torch.Tensor, weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Depthwise ConvTranspose k=3 (third tap zero), s=2, pad=1: cell X -> cells 2X-1,
        2X. The output padding makes the stride-32 grid size, odd or even, without a
        Padding layer."""
        pad_h = like.shape[2] - (2 * x.shape[2] - 1)  # 1 for even stride-32 grids, 0 for odd
        pad_w = like.shape[3] - (2 * x.shape[3] - 1)
        return F.conv_transpose2d(x, weight, stride=2, padding=1,
                                  output_padding=(pad_h, pad_w), groups=x.shape[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.from_levels(self.model(x))

    def from_levels(self, levels: LevelLogits) -> tuple[torch.Tensor, ...]:
        """The legacy layout from the Plus model's raw per-level logits."""
        outputs: list[torch.Tensor] = []
        for index, (cls_logits, dis) in enumerate(levels[:3]):
            cls = torch.sigmoid(cls_logits)
            if not self.compensate:
                outputs += [flatten_cells(cls), flatten_cells(dis)]
                continue
            if index == 2 and self.fold:  # the fold places cells on the grid
                cls64_logits, dis64 = levels[3]
                masses = torch.clamp(self.direct[index](side_softmax(dis, self.bins)),
                                     DISTRIBUTION_FLOOR, 1.0)
                folded = self.fold_stride64(torch.cat([cls, masses], 1),
                                            torch.sigmoid(cls64_logits),
                                            self.expect64(side_softmax(dis64, self.bins)))
                cls = folded[:, :self.num_classes]
                dis_out = self.spread[index](torch.log(folded[:, self.num_classes:]))
            else:
                dis_out = distance_logits(self.direct[index], self.spread[index],
                                          side_softmax_flat(dis, self.bins))
            outputs += [flatten_cells(cls), flatten_cells(dis_out)]
        return tuple(outputs)


@dataclass(frozen=True)
class ClampedCell:
    """A cell scoring >= the threshold with an edge the legacy layout cannot show: a box
    must contain the firmware's cell centre, so that edge is shown at the centre instead.

    Strides 8-32: a right or bottom edge under half a stride past the Plus centre (the
    firmware's centre, (x+0.5)*stride, lies beyond it). A folded stride-64 prediction:
    an edge under a quarter stride (16 px) from its centre on the side of the stride-32
    cell it lands in (that cell's centre lies 16 px off the stride-64 centre).
    """

    level: int  # index into the Plus levels (strides 8, 16, 32, 64)
    cell: int  # row-major cell index on that level
    stride: int
    sides: dict[str, float]  # clamped side -> its Plus distance, in strides
    limit: float  # distances below this (strides) are clamped

    @property
    def shift(self) -> float:
        """Net-input pixels the worst clamped edge moves outwards."""
        return (self.limit - min(self.sides.values())) * self.stride


SIDES = ("left", "top", "right", "bottom")
FOLD_LIMIT = 0.25  # strides of 64: a stride-32 cell's centre lies 16 px off the Plus centre


def clamped_cells(levels: list[LevelOutput], threshold: float = 0.4) -> list[ClampedCell]:
    """Cells scoring >= `threshold` that the rewrite clamps (see ClampedCell); with a
    stride-64 level, as `stride64='fold'` places its predictions."""
    found = []
    for index, level in enumerate(levels[:3]):
        hot = np.flatnonzero(level.cls.max(1) >= threshold)
        if hot.size == 0:
            continue
        for cell, dist in zip(hot, expected_distances(level.dis[hot])):
            sides = {side: float(d) for side, d in zip(SIDES[2:], dist[2:]) if d < HALF_STRIDE}
            if sides:
                found.append(ClampedCell(index, int(cell), level.stride, sides, HALF_STRIDE))
    if len(levels) > 3:
        found += _folded_clamps(levels[2], levels[3], threshold)
    return found


def _folded_clamps(s32: LevelOutput, s64: LevelOutput, threshold: float) -> list[ClampedCell]:
    """Stride-64 cells scoring >= `threshold` whose prediction lands (`fold_stride64`: the
    weakest of stride-32 cells 2X-1..2X, 2Y-1..2Y, within 1/FOLD_SHARPNESS, if it scores
    higher) in a cell whose centre the box does not contain."""
    own = s32.cls.max(1).reshape(s32.height, s32.width)
    score64 = s64.cls.max(1)
    found = []
    for cell in np.flatnonzero(score64 >= threshold):
        big_y, big_x = divmod(int(cell), s64.width)
        rows = [y for y in (2 * big_y - 1, 2 * big_y) if 0 <= y < s32.height]
        cols = [x for x in (2 * big_x - 1, 2 * big_x) if 0 <= x < s32.width]
        block = own[np.ix_(rows, cols)]
        left, top, right, bottom = expected_distances(s64.dis[cell:cell + 1])[0]
        sides: dict[str, float] = {}
        for y in rows:
            for x in cols:
                taken = own[y, x] - block.min() < 1 / FOLD_SHARPNESS and score64[cell] > own[y, x]
                if not taken:
                    continue
                # cell 2X-1 (centre 16 px left of the Plus centre) shows the left edge from
                # 16 px nearer; cell 2X the right edge; likewise top and bottom
                facing = (("left", left) if x == 2 * big_x - 1 else ("right", right),
                          ("top", top) if y == 2 * big_y - 1 else ("bottom", bottom))
                sides.update({side: float(d) for side, d in facing if d < FOLD_LIMIT})
        if sides:
            found.append(ClampedCell(3, int(cell), s64.stride, sides, FOLD_LIMIT))
    return found


def rewrite_residuals(levels: list[LevelOutput], threshold: float = 0.4) -> dict[str, int]:
    """How often the Plus-to-legacy rewrite meets its limits on one image.

    `levels` are LevelOutputs of the Plus head (strides 8..64). Counts cells
    scoring >= `threshold`: `clamped` (see `clamped_cells`); `competing`,
    stride-32 cells that a stride-64 prediction would also claim (the higher
    score wins the cell).
    """
    clamped = len(clamped_cells(levels, threshold))
    competing = 0
    if len(levels) > 3:
        s32, s64 = levels[2], levels[3]
        own = (s32.cls.max(1) >= threshold).reshape(s32.height, s32.width)
        big = (s64.cls.max(1) >= threshold).reshape(s64.height, s64.width)
        claimed = np.zeros_like(own)
        for y, x in zip(*np.nonzero(big)):  # cells 2X-1..2X, 2Y-1..2Y
            claimed[max(2 * y - 1, 0):2 * y + 1, max(2 * x - 1, 0):2 * x + 1] = True
        competing = int((own & claimed).sum())
    return {"clamped": clamped, "competing": competing}
