"""Infer a NanoDet architecture from a state_dict alone (no config).

Each registered component reads its own keywords from the weights
(`keywords_from_weights`); this module asks them in turn and checks that the
parts fit together.
"""

from __future__ import annotations

from collections.abc import Mapping

from heads.component import Component, Keywords
from heads.registry import BACKBONES, HEADS, NECKS, feature_strides, stage_widths
from heads.spec import ArchSpec, BackboneSpec, HeadSpec, NeckSpec, default_class_names
from heads.weights import ASSUMED_ACTIVATION, StateDict, UnknownArchitecture

__all__ = ["UnknownArchitecture", "infer_spec"]


def _claimed(registry: Mapping[str, type[Component]], *args: object) -> tuple[str, Keywords] | None:
    """The first registered kind whose weights `args` (a state_dict, ...) hold, and its keywords."""
    for kind, component in registry.items():
        keywords = component.keywords_from_weights(*args)
        if keywords is not None:
            return kind, keywords
    return None


def _unclaimed(part: str, registry: Mapping[str, type[Component]], sd: StateDict
               ) -> UnknownArchitecture:
    """No registered `part` holds these weights: name the closest and the first key that
    differs from what it expects."""
    keys = sorted(k for k in sd if k.startswith(f"{part}."))
    if not keys:
        return UnknownArchitecture(f"no {part} weights (no key starts with '{part}.')")
    known = [c for c in registry.values() if c.WEIGHTS_PREFIX]
    closest = max(known, key=lambda c: max(_shared_parts(c.WEIGHTS_PREFIX, k) for k in keys))
    differing = max(keys, key=lambda k: _shared_parts(closest.WEIGHTS_PREFIX, k))
    unknown = f"{part} weights match no known {part} ({', '.join(registry)})"
    if _shared_parts(closest.WEIGHTS_PREFIX, differing) <= 1:  # only the part name in common
        return UnknownArchitecture(f"{unknown}: the first key, {keys[0]}, looks like none "
                                   "of theirs")
    return UnknownArchitecture(f"{unknown}; closest: {closest.__name__}, whose keys start "
                               f"{closest.WEIGHTS_PREFIX}*, but the first key that differs "
                               f"is {differing}")


def _shared_parts(prefix: str, key: str) -> int:
    """How many leading dotted parts `key` shares with `prefix`."""
    shared = 0
    for expected, found in zip(prefix.rstrip(".").split("."), key.split(".")):
        if expected != found:
            break
        shared += 1
    return shared


def _backbone(sd: StateDict) -> tuple[str, Keywords]:
    found = _claimed(BACKBONES, sd)
    if found is None:
        raise _unclaimed("backbone", BACKBONES, sd)
    return found


def _neck(sd: StateDict) -> NeckSpec:
    found = _claimed(NECKS, sd)
    if found is None:
        raise _unclaimed("fpn", NECKS, sd)
    kind, keywords = found
    return NeckSpec.of(kind, **keywords)


def _head(sd: StateDict, strides: tuple[int, ...]) -> HeadSpec:
    found = _claimed(HEADS, sd, strides)
    if found is None:
        raise _unclaimed("head", HEADS, sd)
    kind, keywords = found
    return HeadSpec.of(kind, **keywords)


def _stage_of(width: int, widths: dict[int, int]) -> int:
    """The deepest stage of that width (GhostNet's stages 3 and 4 are both 40 wide, and
    NanoDet's configs take the deeper one)."""
    for stage, w in reversed(widths.items()):
        if w == width:
            return stage
    raise UnknownArchitecture(f"neck input width {width} is no backbone stage's width")


def infer_spec(sd: StateDict) -> ArchSpec:
    """Rebuild the ArchSpec that produced `sd`; activation cannot be seen and is assumed."""
    backbone_kind, backbone_keywords = _backbone(sd)
    neck = _neck(sd)
    widths = stage_widths(BackboneSpec.of(backbone_kind, **backbone_keywords))
    out_stages = tuple(_stage_of(c, widths) for c in neck.in_channels)
    if list(out_stages) != sorted(set(out_stages)):
        raise UnknownArchitecture(f"neck inputs {neck.in_channels} are backbone stages "
                                  f"{out_stages}, not each stage once in order")
    backbone = BackboneSpec.of(backbone_kind, **backbone_keywords, out_stages=out_stages)
    head = _head(sd, feature_strides(backbone, neck.get("num_extra_level", 0)))
    if head.input_channel != neck.out_channels:
        raise UnknownArchitecture(f"the head takes {head.input_channel} channels but the neck "
                                  f"gives {neck.out_channels}")
    if neck.kind == "PAN" and head.kind == "NanoDetPlusHead":
        raise UnknownArchitecture("a PAN neck with a head without gfl_reg is no released NanoDet")
    assumed = backbone.get("activation", ASSUMED_ACTIVATION)
    notes = ((f"activation is not stored in the weights: assumed {assumed} "
              f"(NanoDet's default for {backbone.kind}); give --config if the model used another"),
             *BACKBONES[backbone.kind].INFERENCE_NOTES, *NECKS[neck.kind].INFERENCE_NOTES,
             *HEADS[head.kind].INFERENCE_NOTES,
             f"class names not given: using class0..class{head.num_classes - 1}")
    return ArchSpec(backbone=backbone, neck=neck, head=head,
                    class_names=default_class_names(head.num_classes), input_size=None,
                    source="inferred", notes=notes)
