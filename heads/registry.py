"""Registries of the backbones, necks and heads this tool builds, by their config `name`.

Adding a component: write its module (a `heads.component` subclass) and add one
`register_*` line at the end of this file.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

from heads.component import Backbone, Component, Head, Keywords, Neck
from heads.custom_csp import CustomCspNet
from heads.efficientnet_lite import EfficientNetLite
from heads.fpn import FPN
from heads.ghost_pan import GhostPAN
from heads.ghostnet import GhostNet
from heads.mobilenetv2 import MobileNetV2
from heads.nanodet_head import NanoDetHead
from heads.nanodet_plus_head import NanoDetPlusHead
from heads.pan import PAN
from heads.repvgg import RepVGG
from heads.resnet import ResNet
from heads.shufflenetv2 import ShuffleNetV2
from heads.spec import BackboneSpec
from heads.tan import TAN
from heads.timm_wrapper import TIMMWrapper

BACKBONES: dict[str, type[Backbone]] = {}
NECKS: dict[str, type[Neck]] = {}  # the config's model.arch.fpn
HEADS: dict[str, type[Head]] = {}

C = TypeVar("C", bound=type[Component])


def _register(registry: dict[str, Any], cls: C, name: str | None) -> C:
    registry[name or cls.__name__] = cls
    return cls


def register_backbone(cls: type[Backbone], name: str | None = None) -> type[Backbone]:
    return _register(BACKBONES, cls, name)


def register_neck(cls: type[Neck], name: str | None = None) -> type[Neck]:
    return _register(NECKS, cls, name)


def register_head(cls: type[Head], name: str | None = None) -> type[Head]:
    return _register(HEADS, cls, name)


def _parameters(cls: type[Component]) -> list[inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    return [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def required_keywords(cls: type[Component]) -> set[str]:
    """Constructor keywords without a default."""
    return {p.name for p in _parameters(cls) if p.default is p.empty}


def complete_keywords(cls: type[Component], given: Mapping[str, Any]) -> Keywords:
    """Every constructor keyword of `cls`, in signature order: `given`, else its default."""
    params = _parameters(cls)
    unknown = set(given) - {p.name for p in params}
    missing = [p.name for p in params if p.default is p.empty and p.name not in given]
    if unknown or missing:
        raise TypeError(f"{cls.__name__}: unknown keywords {sorted(unknown)}, "
                        f"missing {missing}")
    return {p.name: given.get(p.name, p.default) for p in params}


def stage_widths(backbone: BackboneSpec) -> dict[int, int]:
    """Output channels of every stage the backbone may output."""
    return BACKBONES[backbone.kind].stage_widths(**backbone.keywords())


def feature_strides(backbone: BackboneSpec, num_extra_level: int = 0) -> tuple[int, ...]:
    """Strides of the backbone's out_stages, then of the neck's extra levels (each x2)."""
    stage_strides = BACKBONES[backbone.kind].stage_strides(**backbone.keywords())
    strides = [stage_strides[stage] for stage in backbone.out_stages]
    for _ in range(num_extra_level):
        strides.append(strides[-1] * 2)
    return tuple(strides)


def build(registry: Mapping[str, type[nn.Module]], kind: str, keywords: Keywords) -> nn.Module:
    """The registered module `kind`, built with keyword arguments only."""
    return registry[kind](**keywords)


register_backbone(ShuffleNetV2)
register_backbone(EfficientNetLite)
register_backbone(RepVGG)
register_backbone(MobileNetV2)
register_backbone(ResNet)
register_backbone(GhostNet)
register_backbone(CustomCspNet)
register_backbone(TIMMWrapper)
register_neck(PAN)
register_neck(GhostPAN)
register_neck(TAN)
register_neck(FPN)  # claims no weights: an FPN's keys are a PAN's
register_head(NanoDetHead)
register_head(NanoDetPlusHead)
