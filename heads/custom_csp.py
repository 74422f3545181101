"""NanoDet-g backbone: CustomCspNet (nanodet/model/backbone/custom_csp.py).

A list of stages from `net_cfg`, each one of
  ["Conv", in_channels, out_channels, kernel_size, stride]      conv+BN+act
  ["MaxPool", kernel_size, stride]                              no weights
  ["CspBlock", in_channels, num_res, kernel_size, stride]       gives 2 * in_channels
and `out_stages` indexes that list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from heads.component import Backbone, Keywords
from heads.conv_modules import ConvModule
from heads.schema import ACTIVATION, ConfigProblem, Schema, expected, integers, mapping
from heads.untrusted import shown
from heads.weights import ASSUMED_ACTIVATION, StateDict, UnknownArchitecture, shape

Stage = tuple[Any, ...]
MAX_STAGES = 32
# nanodet-g's layout: weights hold no strides or pooling, so inference recognises only this one
NANODET_G_NET_CFG: tuple[Stage, ...] = (
    ("Conv", 3, 32, 3, 2), ("MaxPool", 3, 2), ("CspBlock", 32, 1, 3, 1),
    ("CspBlock", 64, 2, 3, 2), ("CspBlock", 128, 2, 3, 2), ("CspBlock", 256, 3, 3, 2))
LAYOUT_NOTE = ("CustomCspNet strides and pooling are not stored in the weights: nanodet-g's "
               "taken (its layers matched)")
STAGE_FIELDS = {"Conv": ("in_channels", "out_channels", "kernel_size", "stride"),
                "MaxPool": ("kernel_size", "stride"),
                "CspBlock": ("in_channels", "num_res", "kernel_size", "stride")}
FIELD_RANGES = {"in_channels": (1, 4096), "out_channels": (1, 4096), "num_res": (0, 16),
                "kernel_size": (1, 9), "stride": (1, 4)}


def same_padding_conv(in_channels: int, out_channels: int, kernel_size: int,
                      stride: int = 1, activation: str = "LeakyReLU") -> ConvModule:
    return ConvModule(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                      activation=activation)


class TinyResBlock(nn.Module):
    """in_conv halves the channels, mid_conv keeps them; output cat(mid, in) (NanoDet's concat)."""

    def __init__(self, in_channels: int, kernel_size: int, activation: str):
        super().__init__()
        half = in_channels // 2
        self.in_conv = same_padding_conv(in_channels, half, kernel_size, activation=activation)
        self.mid_conv = same_padding_conv(half, half, kernel_size, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)
        return torch.cat((self.mid_conv(x), x), dim=1)


class CspBlock(nn.Module):
    """in_conv (strided), res_blocks, res_out_conv; output cat(res path, in_conv), 2x channels."""

    def __init__(self, in_channels: int, num_res: int, kernel_size: int, stride: int,
                 activation: str):
        super().__init__()
        self.in_conv = same_padding_conv(in_channels, in_channels, kernel_size, stride,
                                         activation)
        self.res_blocks = nn.Sequential(*(TinyResBlock(in_channels, kernel_size, activation)
                                          for _ in range(num_res)))
        self.res_out_conv = same_padding_conv(in_channels, in_channels, kernel_size,
                                              activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)
        return torch.cat((self.res_out_conv(self.res_blocks(x)), x), dim=1)


def build_stage(stage: Stage, activation: str) -> nn.Module:
    kind, *values = stage
    if kind == "Conv":
        in_channels, out_channels, kernel_size, stride = values
        return same_padding_conv(in_channels, out_channels, kernel_size, stride, activation)
    if kind == "CspBlock":
        in_channels, num_res, kernel_size, stride = values
        return CspBlock(in_channels, num_res, kernel_size, stride, activation)
    kernel_size, stride = values
    return nn.MaxPool2d(kernel_size, stride, padding=(kernel_size - 1) // 2)


def stage_output_widths(net_cfg: Sequence[Stage], in_channels: int = 3) -> list[int]:
    widths, width = [], in_channels
    for kind, *values in net_cfg:
        width = values[1] if kind == "Conv" else 2 * values[0] if kind == "CspBlock" else width
        widths.append(width)
    return widths


def checked_net_cfg(value: Any, key: str, error: type[Exception] = ConfigProblem
                    ) -> tuple[Stage, ...]:
    """net_cfg as a tuple of stage tuples, each of a known kind with values in range, each
    stage taking the channels the previous one gives (3 for the first)."""
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_STAGES:
        raise error(str(expected(key, f"a list of 1 to {MAX_STAGES} stages", value)))
    stages, width = [], 3
    for index, stage in enumerate(value):
        where = f"{key}[{index}]"
        checked = _checked_stage(stage, where, error)
        if checked[0] != "MaxPool" and checked[1] != width:
            raise error(f"{where}: takes {checked[1]} channels but gets {width}")
        if checked[0] == "CspBlock" and checked[1] % 2:
            raise error(f"{where}: a CspBlock needs an even channel count, not {checked[1]}")
        width = stage_output_widths([checked], width)[0]
        stages.append(checked)
    return tuple(stages)


def _checked_stage(stage: Any, where: str, error: type[Exception]) -> Stage:
    kinds = " or ".join(f"[{k!r}, {', '.join(f)}]" for k, f in STAGE_FIELDS.items())
    if not isinstance(stage, (list, tuple)) or not stage or stage[0] not in STAGE_FIELDS or \
            len(stage) != 1 + len(STAGE_FIELDS[stage[0]]):
        raise error(f"{where}: expected {kinds}, got {shown(stage)}")
    for field, value in zip(STAGE_FIELDS[stage[0]], stage[1:]):
        low, high = FIELD_RANGES[field]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise error(f"{where}: {field} {shown(value)} is not an integer from {low} to {high}")
    return tuple(stage)


def batch_norm_only(value: Any, key: str) -> Any:
    """NanoDet's norm_cfg: only BatchNorm is rebuilt."""
    if mapping(value, key).get("type") != "BN":
        raise ConfigProblem(f"{key}: only type BN is supported, got {shown(value)}")
    return value


class CustomCspNet(Backbone):
    """Outputs the stages `out_stages` names (indices into `net_cfg`); BN after every conv.

    out_stages has no default in NanoDet; (3, 4, 5) is nanodet-g's.
    """

    CONFIG_KEYS: ClassVar[Schema] = {
        "net_cfg": checked_net_cfg,
        "out_stages": integers(0, MAX_STAGES - 1, max_len=MAX_STAGES),
        "norm_cfg": batch_norm_only,
        "activation": ACTIVATION,
    }
    WEIGHTS_HINT = "CustomCspNet backbone keys (backbone.stages.N.res_out_conv)"
    WEIGHTS_PREFIX = "backbone.stages."
    # for heads.infer to add to the notes of an inferred CustomCspNet
    INFERENCE_NOTES: ClassVar[tuple[str, ...]] = (LAYOUT_NOTE,)

    def __init__(self, *, net_cfg: Sequence[Sequence[Any]],
                 out_stages: tuple[int, ...] = (3, 4, 5), activation: str = "LeakyReLU"):
        super().__init__()
        net_cfg = checked_net_cfg(net_cfg, "net_cfg", error=ValueError)
        if not set(out_stages) <= set(range(len(net_cfg))):
            raise ValueError(f"out_stages {list(out_stages)} are not all stages of net_cfg")
        self.out_stages = tuple(out_stages)
        self.stages = nn.ModuleList(build_stage(stage, activation) for stage in net_cfg)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.stage_outputs(x, enumerate(self.stages))

    @classmethod
    def keywords_from_config(cls, values: Keywords) -> Keywords:
        values = {k: v for k, v in values.items() if k != "norm_cfg"}  # checked: always BN
        stages = len(values.get("net_cfg", ()))
        if any(stage >= stages for stage in values.get("out_stages", ())):
            raise ConfigProblem(f"model.arch.backbone.out_stages {list(values['out_stages'])}: "
                                f"net_cfg has stages 0 to {stages - 1}")
        return values

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        csp_block = re.compile(r"backbone\.stages\.\d+\.res_out_conv\.")
        if not any(csp_block.match(k) for k in sd):
            return None
        seen = weight_layout(sd, len(NANODET_G_NET_CFG))
        expected_layout = [None if kind == "MaxPool" else (kind, *values[:-1])
                           for kind, *values in NANODET_G_NET_CFG]
        if seen != expected_layout:
            raise UnknownArchitecture(
                f"backbone keys look like CustomCspNet but its stages {seen} are not "
                "nanodet-g's (strides and pooling are not stored: give --config)")
        return {"net_cfg": NANODET_G_NET_CFG, "activation": ASSUMED_ACTIVATION}

    @classmethod
    def stage_widths(cls, net_cfg: Sequence[Stage], **_: object) -> dict[int, int]:
        return dict(enumerate(stage_output_widths(net_cfg)))

    @classmethod
    def stage_strides(cls, net_cfg: Sequence[Stage], **_: object) -> dict[int, int]:
        strides, stride = {}, 1
        for index, stage in enumerate(net_cfg):
            stride *= stage[-1]
            strides[index] = stride
        return strides

    @classmethod
    def describe(cls, net_cfg: Sequence[Stage], **_: object) -> str:
        name = "nanodet-g" if tuple(map(tuple, net_cfg)) == NANODET_G_NET_CFG else \
            f"{len(net_cfg)} stages"
        return f"CustomCspNet ({name})"


def weight_layout(sd: StateDict, stages: int) -> list[tuple[Any, ...] | None]:
    """Per stage index what the weights show: ("Conv", in, out, k), ("CspBlock", in, n, k)
    or None (no weights: a MaxPool)."""
    layout: list[tuple[Any, ...] | None] = []
    for index in range(max(stages, _stage_count(sd))):
        prefix = f"backbone.stages.{index}"
        if f"{prefix}.conv.weight" in sd:
            out, inp, k, _ = shape(sd, f"{prefix}.conv.weight")
            layout.append(("Conv", inp, out, k))
        elif f"{prefix}.in_conv.conv.weight" in sd:
            out, inp, k, _ = shape(sd, f"{prefix}.in_conv.conv.weight")
            num_res = len({key.split(".")[4] for key in sd
                           if key.startswith(f"{prefix}.res_blocks.")})
            layout.append(("CspBlock", inp, num_res, k))
        else:
            layout.append(None)
    return layout


def _stage_count(sd: StateDict) -> int:
    indices = [int(m.group(1)) for k in sd if (m := re.match(r"backbone\.stages\.(\d+)\.", k))]
    return max(indices, default=-1) + 1
