"""Read an official NanoDet YAML config into an ArchSpec.

The config is untrusted: it is read with a bounded size, parsed by a safe
loader that refuses Python tags and alias bombs, and every value used is
checked against a small schema (type and range) before anything is built. A
problem names the file, the key path and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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
    feature_strides,
)
from heads.untrusted import has_control_character, read_bounded, shown

MAX_CONFIG_BYTES = 1 << 20  # the official configs are 3-5 KiB
MAX_YAML_NODES = 200_000  # counting every node an alias repeats


class _ConfigProblem(Exception):
    pass


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
                raise _ConfigProblem(f"its YAML aliases expand to more than {MAX_YAML_NODES:,} "
                                     "values (an alias bomb?)")
        elif id(node) not in sizes:
            if id(node) in open_nodes:
                raise _ConfigProblem("a YAML alias refers to a node that contains it")
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
        raise _ConfigProblem(f"not valid YAML: {text[:300]}") from None
    except RecursionError:
        raise _ConfigProblem("not usable YAML: nested too deeply") from None


def read_config(path: str | Path) -> ArchSpec:
    path = Path(path)
    data = read_bounded(path, "config", MAX_CONFIG_BYTES)
    try:
        return spec_from_config(_parse_yaml(data))
    except _ConfigProblem as exc:
        raise InputError(path, str(exc)) from None


# --- the schema: each check takes (value, key path) and returns the value to use ----------

Check = Callable[[Any, str], Any]
REQUIRED = object()


def _describe(value: Any) -> str:
    kinds = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    kind = kinds.get(type(value), f"a {type(value).__name__}")
    return kind if value is None else f"{shown(value)} ({kind})"


def _expected(key: str, expected: str, value: Any) -> _ConfigProblem:
    return _ConfigProblem(f"{key}: expected {expected}, got {_describe(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int, high: int, odd: bool = False) -> Check:
    def check(value: Any, key: str) -> int:
        if not _is_int(value) or not low <= value <= high or (odd and value % 2 == 0):
            raise _expected(key, f"{'an odd' if odd else 'an'} integer from {low} to {high}",
                            value)
        return value
    return check


def integers(low: int, high: int, min_len: int = 1, max_len: int = 8) -> Check:
    def check(value: Any, key: str) -> tuple[int, ...]:
        if not (isinstance(value, list) and min_len <= len(value) <= max_len
                and all(_is_int(v) and low <= v <= high for v in value)):
            count = str(min_len) if min_len == max_len else f"{min_len} to {max_len}"
            raise _expected(key, f"a list of {count} integers from {low} to {high}", value)
        return tuple(value)
    return check


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _expected(key, "true or false", value)
    return value


def choice(names: Any, what: str) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in names:
            raise _ConfigProblem(f"{key} {shown(value)} is not {what} "
                                 f"(known: {', '.join(names)})")
        return value
    return check


def mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _expected(key, "a mapping of keys to values", value)
    return value


def normalize(value: Any, key: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """[[mean B, G, R], [std B, G, R]]: finite numbers, positive stds."""
    def finite(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    rows_ok = (isinstance(value, list) and len(value) == 2
               and all(isinstance(row, list) and len(row) == 3 and all(map(finite, row))
                       for row in value))
    if not rows_ok or min(value[1]) <= 0:
        raise _expected(key, "[[3 mean values], [3 positive std values]]", value)
    return tuple(map(float, value[0])), tuple(map(float, value[1]))


def class_names(value: Any, key: str) -> tuple[str, ...]:
    """A list of names; numbers are taken as written, other kinds (true, null, lists) refused."""
    if not isinstance(value, list):
        raise _expected(key, "a list of class names", value)
    for index, name in enumerate(value):
        if not isinstance(name, (str, int, float)) or isinstance(name, bool):
            raise _expected(f"{key}[{index}]", "a class name (quote names like yes, no, null)",
                            name)
        if has_control_character(str(name)):
            raise _ConfigProblem(f"{key}[{index}]: class name {shown(name)} holds a control "
                                 "character")
    return tuple(str(name) for name in value)


def optional(check: Check) -> Check:
    """`check`, but null means absent."""
    return lambda value, key: None if value is None else check(value, key)


Schema = Mapping[str, tuple[Check, Any]]
CHANNELS = integer(1, 4096)
ACTIVATION = choice(ACTIVATION_NAMES, "a NanoDet activation")
BACKBONE: Schema = {
    "model_size": (choice(tuple(STAGE_CHANNELS), "a ShuffleNetV2 size"), "1.5x"),
    "out_stages": (integers(2, 4, max_len=3), (2, 3, 4)),
    "activation": (ACTIVATION, "ReLU"),
    "with_last_conv": (boolean, False),
}
PAN: Schema = {"in_channels": (integers(1, 4096, max_len=3), REQUIRED),
               "out_channels": (CHANNELS, REQUIRED)}
GHOST_PAN: Schema = {**PAN, "kernel_size": (integer(1, 9, odd=True), 5),
                     "num_extra_level": (integer(0, 2), 0),
                     "use_depthwise": (boolean, False), "activation": (ACTIVATION, "LeakyReLU")}
HEAD: Schema = {
    "num_classes": (integer(1, 10_000), REQUIRED),
    "input_channel": (CHANNELS, REQUIRED),
    "stacked_convs": (integer(1, 8), 2),
    "strides": (integers(1, 1024, max_len=5), (8, 16, 32)),
    "conv_type": (choice(("DWConv", "Conv"), "a NanoDet conv_type"), "DWConv"),
    "activation": (ACTIVATION, "LeakyReLU"),
}
PLUS_HEAD: Schema = {**HEAD, "feat_channels": (CHANNELS, 96),
                     "kernel_size": (integer(1, 9, odd=True), 5), "reg_max": (integer(1, 64), 7)}
LEGACY_HEAD: Schema = {**HEAD, "feat_channels": (CHANNELS, 256), "reg_max": (integer(1, 64), 16),
                       "share_cls_reg": (boolean, False)}
DATA_SPLIT: Schema = {"input_size": (optional(integers(1, 8192, 2, 2)), None),
                      "pipeline": (optional(mapping), None)}
SUPPORTED = {"backbone": ("ShuffleNetV2",), "fpn": ("PAN", "GhostPAN"),
             "head": ("NanoDetHead", "NanoDetPlusHead")}


def _value(section: Mapping[str, Any], key: str, check: Check, default: Any) -> Any:
    name = key.rsplit(".", 1)[-1]
    if name not in section:
        if default is REQUIRED:
            raise _ConfigProblem(f"missing {key}")
        return default
    return check(section[name], key)


def _fields(section: Mapping[str, Any], key: str, schema: Schema) -> dict[str, Any]:
    """Every key of `schema`, checked, defaults filled in."""
    return {name: _value(section, f"{key}.{name}", check, default)
            for name, (check, default) in schema.items()}


def _sections(cfg: Any) -> dict[str, Mapping[str, Any]]:
    """model.arch.{backbone,fpn,head} as mappings, each of a supported kind."""
    if cfg is None:
        raise _ConfigProblem("empty config (expected a YAML mapping with model.arch)")
    node = mapping(cfg, "the top level")
    for key in ("model", "model.arch"):
        node = mapping(_value(node, key, mapping, REQUIRED), key)
    sections = {part: mapping(_value(node, f"model.arch.{part}", mapping, REQUIRED),
                              f"model.arch.{part}") for part in SUPPORTED}
    for part, kinds in SUPPORTED.items():
        name = sections[part].get("name")
        if name not in kinds:
            raise _ConfigProblem(f"{part} {shown(name)} is not supported "
                                 f"({'only ' if len(kinds) == 1 else ''}{' or '.join(kinds)})")
    return sections


# --- from checked values to an ArchSpec ------------------------------------------------------

def _backbone(section: Mapping[str, Any]) -> BackboneSpec:
    b = _fields(section, "model.arch.backbone", BACKBONE)
    if list(b["out_stages"]) != sorted(set(b["out_stages"])):
        raise _ConfigProblem(f"model.arch.backbone.out_stages {list(b['out_stages'])}: each "
                             "stage at most once, in increasing order")
    return BackboneSpec(**b)


def _neck(section: Mapping[str, Any], backbone: BackboneSpec) -> NeckSpec:
    for key, plain in (("expand", 1), ("num_blocks", 1), ("use_res", False)):
        if section.get(key, plain) != plain:
            raise _ConfigProblem(f"model.arch.fpn.{key}={shown(section[key])} is not supported "
                                 f"(only {plain!r}, as in the released models)")
    kind = section["name"]
    f = _fields(section, "model.arch.fpn", PAN if kind == "PAN" else GHOST_PAN)
    channels = STAGE_CHANNELS[backbone.model_size]
    widths = {2: channels[1], 3: channels[2], 4: channels[4 if backbone.with_last_conv else 3]}
    expected = [widths[stage] for stage in backbone.out_stages]
    if list(f["in_channels"]) != expected:
        raise _ConfigProblem(f"model.arch.fpn.in_channels {list(f['in_channels'])} differ from "
                             f"the widths {expected} of ShuffleNetV2 {backbone.model_size} "
                             f"out_stages {list(backbone.out_stages)}")
    if kind == "PAN":  # 1x1 lateral convs, no norm, no activation, no extra levels
        return NeckSpec(kind="PAN", kernel_size=1, use_depthwise=False, activation=None, **f)
    return NeckSpec(kind="GhostPAN", **f)


def _head(section: Mapping[str, Any], backbone: BackboneSpec, neck: NeckSpec) -> HeadSpec:
    kind = section["name"]
    plus = kind == "NanoDetPlusHead"
    h = _fields(section, "model.arch.head", PLUS_HEAD if plus else LEGACY_HEAD)
    levels = len(neck.in_channels) + neck.num_extra_level
    if len(h["strides"]) != levels:
        raise _ConfigProblem(f"head has {len(h['strides'])} strides but the fpn gives "
                             f"{levels} levels")
    strides = feature_strides(backbone.out_stages, neck.num_extra_level)
    if h["strides"] != strides:
        raise _ConfigProblem(f"model.arch.head.strides {list(h['strides'])} differ from the "
                             f"strides {list(strides)} of the fpn levels")
    if h["input_channel"] != neck.out_channels:
        raise _ConfigProblem(f"model.arch.head.input_channel {h['input_channel']} differs from "
                             f"model.arch.fpn.out_channels {neck.out_channels}")
    depthwise = h.pop("conv_type") == "DWConv"
    if plus:
        return HeadSpec(kind=kind, share_cls_reg=True, depthwise=depthwise, **h)
    return HeadSpec(kind=kind, kernel_size=3, depthwise=depthwise, **h)


def _data(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """input_size and normalisation of data.val (else data.train), when given."""
    data = _value(cfg, "data", optional(mapping), None) or {}
    name = "val" if data.get("val") else "train"
    split = _value(data, f"data.{name}", optional(mapping), None) or {}
    fields = _fields(split, f"data.{name}", DATA_SPLIT)
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
        raise _ConfigProblem(f"class_names has {len(names)} entries but "
                             f"model.arch.head.num_classes is {head.num_classes}")
    return ArchSpec(backbone=backbone, neck=neck, head=head, class_names=names,
                    source="config", **_data(cfg))
