"""Infer a NanoDet architecture from a state_dict alone (no config)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from heads.shufflenetv2 import STAGE_CHANNELS
from heads.spec import (
    ArchSpec,
    BackboneSpec,
    HeadSpec,
    NeckSpec,
    default_class_names,
    feature_strides,
)

DEFAULT_ACTIVATION = "LeakyReLU"


class UnknownArchitecture(Exception):
    """The state_dict is not one of the NanoDet architectures this tool rebuilds."""


def _shape(sd: Mapping[str, torch.Tensor], key: str, ndim: int = 4) -> tuple[int, ...]:
    """The shape of `sd[key]`, which must have `ndim` non-empty dimensions."""
    if key not in sd:
        raise UnknownArchitecture(f"expected key {key} is missing")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim or min(shape, default=0) < 1:
        raise UnknownArchitecture(f"{key} has shape {shape}, not {ndim} non-empty dimensions")
    return shape


def _count(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many numbered children `prefix.N.` exist (numbered 0..N-1)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    if indices != set(range(len(indices))):
        raise UnknownArchitecture(f"{prefix}.N children are not numbered 0..{len(indices) - 1}")
    return len(indices)


def _odd_kernel(shape: tuple[int, ...], key: str) -> int:
    if shape[-1] != shape[-2] or shape[-1] % 2 == 0:
        raise UnknownArchitecture(f"{key} has a {shape[-2]}x{shape[-1]} kernel, not a square "
                                  "odd one")
    return shape[-1]


def _backbone(sd: Mapping[str, torch.Tensor]) -> tuple[BackboneSpec, tuple[int, ...]]:
    if not any(k.startswith("backbone.stage2.") for k in sd):
        raise UnknownArchitecture("no ShuffleNetV2 backbone keys (backbone.stage2.*)")
    stage2 = 2 * _shape(sd, "backbone.stage2.0.branch1.2.weight")[0]
    sizes = [size for size, ch in STAGE_CHANNELS.items() if ch[1] == stage2]
    if not sizes:
        raise UnknownArchitecture(f"ShuffleNetV2 stage2 width {stage2} matches no model_size")
    channels = STAGE_CHANNELS[sizes[0]]
    with_last_conv = "backbone.conv5.0.weight" in sd
    return BackboneSpec(model_size=sizes[0], activation=DEFAULT_ACTIVATION,
                        with_last_conv=with_last_conv), channels


def _stage_of(width: int, channels: tuple[int, ...], with_last_conv: bool) -> int:
    widths = {2: channels[1], 3: channels[2], 4: channels[4] if with_last_conv else channels[3]}
    for stage, w in widths.items():
        if w == width:
            return stage
    raise UnknownArchitecture(f"neck input width {width} is no backbone stage's width")


def _neck(sd: Mapping[str, torch.Tensor]) -> NeckSpec:
    if "fpn.lateral_convs.0.conv.weight" in sd:
        n = _count(sd, "fpn.lateral_convs")
        shapes = [_shape(sd, f"fpn.lateral_convs.{i}.conv.weight") for i in range(n)]
        return NeckSpec(kind="PAN", in_channels=tuple(s[1] for s in shapes),
                        out_channels=shapes[0][0], use_depthwise=False, kernel_size=1,
                        activation=None)
    if "fpn.reduce_layers.0.conv.weight" in sd and "fpn.top_down_blocks.0.blocks.0.ghost1" \
            ".primary_conv.0.weight" in sd:
        n = _count(sd, "fpn.reduce_layers")
        shapes = [_shape(sd, f"fpn.reduce_layers.{i}.conv.weight") for i in range(n)]
        depthwise = "fpn.downsamples.0.depthwise.weight" in sd
        down_key = "fpn.downsamples.0.depthwise.weight" if depthwise else \
            "fpn.downsamples.0.conv.weight"
        return NeckSpec(kind="GhostPAN", in_channels=tuple(s[1] for s in shapes),
                        out_channels=shapes[0][0],
                        kernel_size=_odd_kernel(_shape(sd, down_key), down_key),
                        num_extra_level=_count(sd, "fpn.extra_lvl_in_conv"),
                        use_depthwise=depthwise, activation=DEFAULT_ACTIVATION)
    raise UnknownArchitecture("neck is neither PAN (fpn.lateral_convs) nor GhostPAN "
                              "(fpn.reduce_layers + fpn.top_down_blocks)")


def _head(sd: Mapping[str, torch.Tensor], strides: tuple[int, ...]) -> HeadSpec:
    plus = not any(k.startswith("head.gfl_reg.") for k in sd)
    reg_max = _shape(sd, "head.distribution_project.project", ndim=1)[0] - 1
    if reg_max < 1:
        raise UnknownArchitecture("head.distribution_project.project has fewer than 2 bins")
    bins = 4 * (reg_max + 1)
    n_levels = _count(sd, "head.gfl_cls")
    if n_levels != len(strides):
        raise UnknownArchitecture(f"head has {n_levels} levels but the neck gives "
                                  f"{len(strides)}")
    stacked = _count(sd, "head.cls_convs.0")
    depthwise = "head.cls_convs.0.0.depthwise.weight" in sd
    first_key = "head.cls_convs.0.0.depthwise.weight" if depthwise \
        else "head.cls_convs.0.0.conv.weight"
    first = _shape(sd, first_key)
    feat = _shape(sd, "head.gfl_cls.0.weight")[1]
    cls_out = _shape(sd, "head.gfl_cls.0.weight")[0]
    share = plus or not any(k.startswith("head.reg_convs.") for k in sd)
    num_classes = cls_out - bins if share else cls_out
    if num_classes <= 0:
        raise UnknownArchitecture(f"head.gfl_cls has {cls_out} outputs, fewer than the "
                                  f"{bins} distance bins of reg_max {reg_max}")
    return HeadSpec(
        kind="NanoDetPlusHead" if plus else "NanoDetHead", num_classes=num_classes,
        input_channel=first[0] if depthwise else first[1], feat_channels=feat,
        stacked_convs=stacked, kernel_size=_odd_kernel(first, first_key),
        strides=strides, reg_max=reg_max,
        share_cls_reg=share, depthwise=depthwise, activation=DEFAULT_ACTIVATION)


def infer_spec(sd: Mapping[str, torch.Tensor]) -> ArchSpec:
    """Rebuild the ArchSpec that produced `sd`; activation cannot be seen and is assumed."""
    backbone, channels = _backbone(sd)
    neck = _neck(sd)
    out_stages = tuple(_stage_of(c, channels, backbone.with_last_conv) for c in neck.in_channels)
    if list(out_stages) != sorted(set(out_stages)):
        raise UnknownArchitecture(f"neck inputs {neck.in_channels} are backbone stages "
                                  f"{out_stages}, not each stage once in order")
    backbone = BackboneSpec(model_size=backbone.model_size, out_stages=out_stages,
                            activation=backbone.activation,
                            with_last_conv=backbone.with_last_conv)
    head = _head(sd, feature_strides(out_stages, neck.num_extra_level))
    if head.input_channel != neck.out_channels:
        raise UnknownArchitecture(f"the head takes {head.input_channel} channels but the neck "
                                  f"gives {neck.out_channels}")
    if neck.kind == "PAN" and head.kind == "NanoDetPlusHead":
        raise UnknownArchitecture("a PAN neck with a head without gfl_reg is no released NanoDet")
    notes = ((f"activation is not stored in the weights: assumed {DEFAULT_ACTIVATION} "
              "(NanoDet's default); give --config if the model used another"),
             f"class names not given: using class0..class{head.num_classes - 1}")
    return ArchSpec(backbone=backbone, neck=neck, head=head,
                    class_names=default_class_names(head.num_classes), input_size=None,
                    source="inferred", notes=notes)
