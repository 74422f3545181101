"""Read an official NanoDet YAML config into an ArchSpec.

The config is untrusted: it is read with a bounded size, parsed by a safe
loader that refuses Python tags and alias bombs, and every value used is
checked against a small schema (type and range) before anything is built. A
problem names the file, the key path and what was expected.

Each part of model.arch names a registered component (`heads.registry`); the
component declares the keys it reads and their checks (`CONFIG_KEYS`), and a key
left out takes the default of the component's constructor, NanoDet's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from common.errors import InputError
from heads.component import Component
from heads.registry import (
    BACKBONES,
    HEADS,
    NECKS,
    feature_strides,
    required_keywords,
    stage_widths,
)
from heads.schema import (
    Check,
    ConfigProblem,
    Schema,
    class_names,
    integers,
    mapping,
    normalize,
    optional,
)
from heads.spec import (
    NANODET_MEAN_BGR,
    NANODET_STD_BGR,
    ArchSpec,
    BackboneSpec,
    HeadSpec,
    NeckSpec,
    default_class_names,
)
from heads.untrusted import read_bounded, shown

MAX_CONFIG_BYTES = 1 << 20  # the official configs are 3-5 KiB
MAX_YAML_NODES = 200_000  # counting every node an alias repeats


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents whose aliases expand past MAX_YAML_NODES."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of the document as if every alias were copied out (linear time)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                raise ConfigProblem(f"its YAML aliases expand to more than {MAX_YAML_NODES:,} "
                                     "values (an alias bomb?)")
        elif id(node) not in sizes:
            if id(node) in open_nodes:
                raise ConfigProblem("a YAML alias refers to a node that contains it")
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _parse_yaml(data: bytes) -> Any:
    try:
        return yaml.load(data, Loader=_BoundedLoader)  # a SafeLoader: no Python tags
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise ConfigProblem(f"not valid YAML: {text[:300]}") from None
    except RecursionError:
        raise ConfigProblem("not usable YAML: nested too deeply") from None


def read_config(path: str | Path) -> ArchSpec:
    path = Path(path)
    data = read_bounded(path, "config", MAX_CONFIG_BYTES)
    try:
        return spec_from_config(_parse_yaml(data))
    except ConfigProblem as exc:
        raise InputError(path, str(exc)) from None


# --- the schema: config keys, checked (heads.schema); components declare theirs ---------

REQUIRED = object()
DATA_SPLIT: Schema = {"input_size": optional(integers(1, 8192, 2, 2)),
                      "pipeline": optional(mapping)}
REGISTRIES: dict[str, Mapping[str, type[Component]]] = {
    "backbone": BACKBONES, "fpn": NECKS, "head": HEADS}


def _value(section: Mapping[str, Any], key: str, check: Check, default: Any) -> Any:
    name = key.rsplit(".", 1)[-1]
    if name not in section:
        if default is REQUIRED:
            raise ConfigProblem(f"missing {key}")
        return default
    return check(section[name], key)


def _keywords(section: Mapping[str, Any], key: str,
              component: type[Component]) -> dict[str, Any]:
    """The keys `component` reads that `section` gives, checked, as constructor keywords.

    A key the section leaves out takes the default of the component's constructor;
    leaving out one without a default is refused.
    """
    required = required_keywords(component)
    given = {}
    for name, check in component.CONFIG_KEYS.items():
        value = _value(section, f"{key}.{name}", check, REQUIRED if name in required else None)
        if name in section:
            given[name] = value
    return component.keywords_from_config(given)


def _sections(cfg: Any) -> dict[str, Mapping[str, Any]]:
    """model.arch.{backbone,fpn,head} as mappings, each of a registered kind."""
    if cfg is None:
        raise ConfigProblem("empty config (expected a YAML mapping with model.arch)")
    node = mapping(cfg, "the top level")
    for key in ("model", "model.arch"):
        node = mapping(_value(node, key, mapping, REQUIRED), key)
    sections = {part: mapping(_value(node, f"model.arch.{part}", mapping, REQUIRED),
                              f"model.arch.{part}") for part in REGISTRIES}
    for part, registry in REGISTRIES.items():
        name, kinds = sections[part].get("name"), tuple(registry)
        if not isinstance(name, str) or name not in kinds:
            raise ConfigProblem(f"{part} {shown(name)} is not supported "
                                f"({'only ' if len(kinds) == 1 else ''}{' or '.join(kinds)})")
    return sections


# --- from checked values to an ArchSpec ------------------------------------------------------

def _backbone(section: Mapping[str, Any]) -> BackboneSpec:
    kind = section["name"]
    b = BackboneSpec.of(kind, **_keywords(section, "model.arch.backbone", BACKBONES[kind]))
    if list(b.out_stages) != sorted(set(b.out_stages)):
        raise ConfigProblem(f"model.arch.backbone.out_stages {list(b.out_stages)}: each "
                            "stage at most once, in increasing order")
    return b


def _neck(section: Mapping[str, Any], backbone: BackboneSpec) -> NeckSpec:
    for key, plain in (("expand", 1), ("num_blocks", 1), ("use_res", False)):
        if section.get(key, plain) != plain:
            raise ConfigProblem(f"model.arch.fpn.{key}={shown(section[key])} is not supported "
                                f"(only {plain!r}, as in the released models)")
    kind = section["name"]
    neck = NeckSpec.of(kind, **_keywords(section, "model.arch.fpn", NECKS[kind]))
    widths = stage_widths(backbone)
    expected = [widths[stage] for stage in backbone.out_stages]
    if list(neck.in_channels) != expected:
        raise ConfigProblem(f"model.arch.fpn.in_channels {list(neck.in_channels)} differ from "
                            f"the widths {expected} of {backbone.describe()} "
                            f"out_stages {list(backbone.out_stages)}")
    return neck


def _head(section: Mapping[str, Any], backbone: BackboneSpec, neck: NeckSpec) -> HeadSpec:
    kind = section["name"]
    head = HeadSpec.of(kind, **_keywords(section, "model.arch.head", HEADS[kind]))
    extra = neck.get("num_extra_level", 0)
    levels = len(neck.in_channels) + extra
    if len(head.strides) != levels:
        raise ConfigProblem(f"head has {len(head.strides)} strides but the fpn gives "
                            f"{levels} levels")
    strides = feature_strides(backbone, extra)
    if head.strides != strides:
        raise ConfigProblem(f"model.arch.head.strides {list(head.strides)} differ from the "
                            f"strides {list(strides)} of the fpn levels")
    if head.input_channel != neck.out_channels:
        raise ConfigProblem(f"model.arch.head.input_channel {head.input_channel} differs from "
                            f"model.arch.fpn.out_channels {neck.out_channels}")
    return head


def _data(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """input_size and normalisation of data.val (else data.train), when given."""
    data = _value(cfg, "data", optional(mapping), None) or {}
    name = "val" if data.get("val") else "train"
    split = _value(data, f"data.{name}", optional(mapping), None) or {}
    fields = {key: _value(split, f"data.{name}.{key}", check, None)
              for key, check in DATA_SPLIT.items()}
    pipeline = fields["pipeline"] or {}
    norm = _value(pipeline, f"data.{name}.pipeline.normalize", optional(normalize), None)
    mean, std = norm or (NANODET_MEAN_BGR, NANODET_STD_BGR)
    return {"input_size": fields["input_size"], "mean_bgr": mean, "std_bgr": std}


def spec_from_config(cfg: Any) -> ArchSpec:
    """Architecture, class names, input size and normalisation from a parsed config."""
    sections = _sections(cfg)
    backbone = _backbone(sections["backbone"])
    neck = _neck(sections["fpn"], backbone)
    head = _head(sections["head"], backbone, neck)
    names = _value(cfg, "class_names", optional(class_names), None)
    if names is None:
        names = default_class_names(head.num_classes)
    if len(names) != head.num_classes:
        raise ConfigProblem(f"class_names has {len(names)} entries but "
                            f"model.arch.head.num_classes is {head.num_classes}")
    return ArchSpec(backbone=backbone, neck=neck, head=head, class_names=names,
                    source="config", **_data(cfg))
