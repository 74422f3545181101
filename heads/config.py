"""Read an official NanoDet YAML config into an ArchSpec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from heads.activations import ACTIVATION_NAMES
from heads.errors import InputError
from heads.shufflenetv2 import STAGE_CHANNELS
from heads.spec import (
    NANODET_MEAN_BGR,
    NANODET_STD_BGR,
    ArchSpec,
    BackboneSpec,
    HeadSpec,
    NeckSpec,
    default_class_names,
)


def read_config(path: str | Path) -> ArchSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "no such config file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read config: {exc}") from None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        return spec_from_config(cfg)
    except _ConfigProblem as exc:
        raise InputError(path, str(exc)) from None


class _ConfigProblem(Exception):
    pass


def _get(mapping: Any, dotted: str) -> Any:
    node = mapping
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise _ConfigProblem(f"missing {dotted}")
        node = node[part]
    return node


def _activation(section: dict, key: str, default: str) -> str:
    name = section.get("activation", default)
    if name not in ACTIVATION_NAMES:
        raise _ConfigProblem(f"{key}.activation {name!r} is not a NanoDet activation "
                             f"(known: {', '.join(ACTIVATION_NAMES)})")
    return name


def spec_from_config(cfg: Any) -> ArchSpec:
    """Architecture, class names, input size and normalisation from a parsed config."""
    backbone_cfg = _get(cfg, "model.arch.backbone")
    fpn_cfg = _get(cfg, "model.arch.fpn")
    head_cfg = _get(cfg, "model.arch.head")
    if backbone_cfg.get("name") != "ShuffleNetV2":
        raise _ConfigProblem(f"backbone {backbone_cfg.get('name')!r} is not supported "
                             "(only ShuffleNetV2)")
    size = backbone_cfg.get("model_size", "1.5x")
    if size not in STAGE_CHANNELS:
        raise _ConfigProblem(f"model.arch.backbone.model_size {size!r} is not a ShuffleNetV2 "
                             f"size (known: {', '.join(STAGE_CHANNELS)})")
    backbone = BackboneSpec(
        model_size=size,
        out_stages=tuple(backbone_cfg.get("out_stages", (2, 3, 4))),
        activation=_activation(backbone_cfg, "model.arch.backbone", "ReLU"),
        with_last_conv=bool(backbone_cfg.get("with_last_conv", False)))

    neck_kind = fpn_cfg.get("name")
    if neck_kind not in ("PAN", "GhostPAN"):
        raise _ConfigProblem(f"fpn {neck_kind!r} is not supported (PAN or GhostPAN)")
    for key, plain in (("expand", 1), ("num_blocks", 1), ("use_res", False)):
        if fpn_cfg.get(key, plain) != plain:
            raise _ConfigProblem(f"model.arch.fpn.{key}={fpn_cfg[key]!r} is not supported "
                                 f"(only {plain!r}, as in the released models)")
    in_channels = tuple(_get(fpn_cfg, "in_channels"))
    out_channels = int(_get(fpn_cfg, "out_channels"))
    if neck_kind == "PAN":  # 1x1 lateral convs, no norm, no activation, no extra levels
        neck = NeckSpec(kind="PAN", in_channels=in_channels, out_channels=out_channels,
                        kernel_size=1, use_depthwise=False, activation=None)
    else:
        neck = NeckSpec(
            kind="GhostPAN", in_channels=in_channels, out_channels=out_channels,
            kernel_size=int(fpn_cfg.get("kernel_size", 5)),
            num_extra_level=int(fpn_cfg.get("num_extra_level", 0)),
            use_depthwise=bool(fpn_cfg.get("use_depthwise", False)),
            activation=_activation(fpn_cfg, "model.arch.fpn", "LeakyReLU"))

    head_kind = head_cfg.get("name")
    if head_kind not in ("NanoDetHead", "NanoDetPlusHead"):
        raise _ConfigProblem(f"head {head_kind!r} is not supported "
                             "(NanoDetHead or NanoDetPlusHead)")
    plus = head_kind == "NanoDetPlusHead"
    head = HeadSpec(
        kind=head_kind,
        num_classes=int(_get(head_cfg, "num_classes")),
        input_channel=int(_get(head_cfg, "input_channel")),
        feat_channels=int(head_cfg.get("feat_channels", 96 if plus else 256)),
        stacked_convs=int(head_cfg.get("stacked_convs", 2)),
        kernel_size=int(head_cfg.get("kernel_size", 5)) if plus else 3,
        strides=tuple(head_cfg.get("strides", (8, 16, 32))),
        reg_max=int(head_cfg.get("reg_max", 7 if plus else 16)),
        share_cls_reg=True if plus else bool(head_cfg.get("share_cls_reg", False)),
        depthwise=head_cfg.get("conv_type", "DWConv") == "DWConv",
        activation=_activation(head_cfg, "model.arch.head", "LeakyReLU"))
    if len(head.strides) != len(neck.in_channels) + neck.num_extra_level:
        raise _ConfigProblem(f"head has {len(head.strides)} strides but the fpn gives "
                             f"{len(neck.in_channels) + neck.num_extra_level} levels")

    names = cfg.get("class_names") if isinstance(cfg, dict) else None
    if names is None:
        names = default_class_names(head.num_classes)
    if len(names) != head.num_classes:
        raise _ConfigProblem(f"class_names has {len(names)} entries but "
                             f"model.arch.head.num_classes is {head.num_classes}")
    data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
    split = data.get("val") or data.get("train") or {}
    size = split.get("input_size")
    normalize = (split.get("pipeline") or {}).get("normalize")
    mean, std = normalize if normalize else (NANODET_MEAN_BGR, NANODET_STD_BGR)
    return ArchSpec(backbone=backbone, neck=neck, head=head,
                    class_names=tuple(str(n) for n in names),
                    input_size=tuple(size) if size else None,
                    mean_bgr=tuple(float(v) for v in mean), std_bgr=tuple(float(v) for v in std),
                    source="config")
