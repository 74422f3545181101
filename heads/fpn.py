"""FPN neck (nanodet/model/fpn/fpn.py): 1x1 lateral convs with bias and a top-down pass.

NanoDet's PAN subclasses this FPN (same lateral convs and keys, plus a bottom-up pass);
here PAN lives in `heads.pan` with its own keywords. The weights of an FPN and a PAN are
the same keys, so weights alone cannot tell them apart: FPN is only built from a config.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from heads.component import Keywords, Neck
from heads.conv_modules import ConvModule
from heads.schema import (
    ACTIVATION,
    CHANNELS,
    Check,
    ConfigProblem,
    Schema,
    integer,
    integers,
    optional,
)
from heads.untrusted import shown
from heads.weights import StateDict


def only(allowed: Any, why: str) -> Check:
    """The one value this tool rebuilds for a key (NanoDet's default)."""
    def check(value: Any, key: str) -> Any:
        if value != allowed or isinstance(value, bool) != isinstance(allowed, bool):
            raise ConfigProblem(f"{key}={shown(value)} is not supported (only {allowed!r}: "
                                f"{why})")
        return value
    return check


class FPN(Neck):
    """Outputs one level per input (num_outs only has to be at least that many, as in NanoDet)."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "in_channels": integers(1, 4096, max_len=5),
        "out_channels": CHANNELS,
        "num_outs": integer(1, 8),
        "start_level": only(0, "every input level is used"),
        "end_level": integer(-1, 8),
        "conv_cfg": only(None, "plain convolutions"),
        "norm_cfg": only(None, "lateral convs without norm"),
        "activation": optional(ACTIVATION),
    }
    WEIGHTS_HINT = "FPN (from a config only: its weights are PAN's)"

    def __init__(self, *, in_channels: tuple[int, ...], out_channels: int, num_outs: int,
                 start_level: int = 0, end_level: int = -1, activation: str | None = None):
        super().__init__()
        if start_level != 0 or end_level not in (-1, len(in_channels)):
            raise ValueError("FPN uses every input level (start_level 0, end_level -1)")
        if num_outs < len(in_channels):
            raise ValueError(f"FPN num_outs {num_outs} is fewer than its {len(in_channels)} "
                             "inputs")
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, use_norm=False, activation=activation)
            for c in in_channels)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], scale_factor=2.0, mode="bilinear")
        return laterals

    @classmethod
    def keywords_from_config(cls, values: Keywords) -> Keywords:
        values = {k: v for k, v in values.items() if k not in ("conv_cfg", "norm_cfg")}
        levels = len(values.get("in_channels", ()))
        if values.get("num_outs", levels) < levels:
            raise ConfigProblem(f"model.arch.fpn.num_outs {values['num_outs']} is fewer than "
                                f"the {levels} in_channels")
        if values.get("end_level", -1) not in (-1, levels):
            raise ConfigProblem(f"model.arch.fpn.end_level={values['end_level']} is not "
                                f"supported (only -1 or {levels}: every input level is used)")
        return values

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        """Never claims weights: an FPN's keys are a PAN's, which the released models use."""
        return None
