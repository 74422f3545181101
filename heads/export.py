"""Export wrappers: what the ONNX graph computes, in each output layout.

* `LegacyLayout`: a legacy NanoDet model as the UnitV2 firmware reads it: per
  level `cls` = sigmoid(logits) as [1, H*W, C] and `dis` = raw logits as
  [1, H*W, 4*(reg_max+1)], sides l, t, r, b.
* `PlusNativeLayout`: NanoDet-Plus's own export: one [1, N, C + 4*(reg_max+1)]
  output, sigmoid applied, levels concatenated.
* `heads.plus_to_legacy.PlusToLegacy`: a NanoDet-Plus model rewritten into the
  legacy layout.

Every wrapper also offers `from_levels(logits)`: the layout computed from the
model's raw per-level logits, so a checker can share one forward pass. The
strategies of heads/rewrites.py choose the wrapper and record it in manifest.json.
"""

from __future__ import annotations

import torch
from torch import nn

from heads.detector import LevelLogits, NanoDet


def flatten_cells(t: torch.Tensor) -> torch.Tensor:
    """[1, K, H, W] -> [1, H*W, K], row-major cells; -1 keeps H, W out of the graph."""
    return t.reshape(1, t.shape[1], -1).permute(0, 2, 1)


class LegacyLayout(nn.Module):
    """A legacy NanoDetHead model in the firmware's layout (no rewrite needed)."""

    def __init__(self, model: NanoDet):
        super().__init__()
        if model.spec.is_plus:
            raise ValueError("LegacyLayout takes a legacy NanoDetHead model; use PlusToLegacy "
                             "(heads.plus_to_legacy)")
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.from_levels(self.model(x))

    def from_levels(self, levels: LevelLogits) -> tuple[torch.Tensor, ...]:
        """The layout from the model's raw per-level logits."""
        outputs: list[torch.Tensor] = []
        for cls, dis in levels:
            outputs += [flatten_cells(torch.sigmoid(cls)), flatten_cells(dis)]
        return tuple(outputs)


class PlusNativeLayout(nn.Module):
    """NanoDet-Plus as its own exporter writes it: one concatenated output."""

    def __init__(self, model: NanoDet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_levels(self.model(x))

    def from_levels(self, levels: LevelLogits) -> torch.Tensor:
        """The layout from the model's raw per-level logits."""
        cells = [torch.cat([torch.sigmoid(cls), dis], 1).flatten(2) for cls, dis in levels]
        return torch.cat(cells, 2).permute(0, 2, 1)
