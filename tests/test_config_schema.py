"""The config reader: every official config reads as before; a bad value is one InputError
naming the file, the key path and what was expected; YAML cannot build objects or explode."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import InputError
from heads.config import read_config
from heads.registry import BACKBONES, HEADS, NECKS
from tests.conftest import LEGACY_CFG, PLUS_CFG, ROOT

OFFICIAL_CONFIGS = ROOT / "fixtures" / "configs"  # NanoDet's official configs (copies)


def refused(path: Path, *phrases: str) -> str:
    with pytest.raises(InputError) as caught:
        read_config(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    for phrase in phrases:
        assert phrase in text, text
    return text


def edited(source: Path, target: Path, dotted: str, value: Any) -> Path:
    """`source` with the value at `dotted` replaced (or deleted when value is DELETE)."""
    cfg = yaml.safe_load(source.read_text())
    node = cfg
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = copy.deepcopy(value)
    target.write_text(yaml.safe_dump(cfg))
    return target


DELETE = object()


@pytest.mark.parametrize("config", sorted(OFFICIAL_CONFIGS.rglob("*.yml")),
                         ids=lambda p: str(p.relative_to(OFFICIAL_CONFIGS)))
def test_every_official_config_reads_or_is_not_supported(config):
    names = {yaml.safe_load(config.read_text())["model"]["arch"][part]["name"]
             for part in ("backbone", "fpn", "head")}
    if names - set(BACKBONES) - set(NECKS) - set(HEADS):  # not (yet) registered
        refused(config, "is not supported")
    elif config.name == "nanodet_custom_xml_dataset.yml":  # a template: 5 names, 80 classes
        refused(config, "class_names has 5 entries", "num_classes is 80")
    else:
        spec = read_config(config)
        assert spec.head.num_classes == 80 and len(spec.class_names) == 80


def test_fixture_configs_read_as_before():
    plus, legacy = read_config(PLUS_CFG), read_config(LEGACY_CFG)
    assert plus.neck.num_extra_level == 1 and plus.head.strides == (8, 16, 32, 64)
    assert plus.input_size == (416, 416) and plus.mean_bgr == (103.53, 116.28, 123.675)
    assert legacy.head.kind == "NanoDetHead" and legacy.head.reg_max == 7
    assert legacy.input_size == (320, 320) and legacy.class_names[0] == "person"


@pytest.mark.parametrize("dotted, value, phrases", [
    ("model.arch.backbone", "ShuffleNetV2", ["model.arch.backbone: expected a mapping",
                                             "'ShuffleNetV2' (a string)"]),
    ("model.arch.head.num_classes", "eighty", [("model.arch.head.num_classes: expected an "
                                               "integer from 1"), "'eighty' (a string)"]),
    ("model.arch.head.num_classes", 0, ["model.arch.head.num_classes: expected an integer"]),
    ("model.arch.head.num_classes", True, ["model.arch.head.num_classes", "(a boolean)"]),
    ("model.arch.head.num_classes", 80.0, ["model.arch.head.num_classes", "(a number)"]),
    ("model.arch.head.num_classes", DELETE, ["missing model.arch.head.num_classes"]),
    ("class_names", 5, ["class_names: expected a list of class names", "5 (an integer)"]),
    ("class_names", [True] * 80, ["class_names[0]: expected a class name", "quote"]),
    ("class_names", ["a\nb"] * 80, ["class_names[0]", "control character"]),
    ("data.val.pipeline.normalize", [[1, 2, 3]], ["data.val.pipeline.normalize: expected"]),
    ("data.val.pipeline.normalize", [[1, 2, 3], [1, 0, 1]], ["positive std"]),
    ("data.val.pipeline.normalize", [[1, 2, float("nan")], [1, 1, 1]], ["normalize"]),
    ("data.val.input_size", "huge", ["data.val.input_size: expected a list of 2 integers"]),
    ("data.val.input_size", [416], ["data.val.input_size"]),
    ("data.val", ["x"], ["data.val: expected a mapping"]),
    ("model.arch.head.strides", ["a", "b"], ["model.arch.head.strides: expected a list"]),
    ("model.arch.head.strides", [4, 8, 16, 32], [("strides [4, 8, 16, 32] differ from the "
                                                 "strides [8, 16, 32, 64]")]),
    ("model.arch.head.strides", [8, 16, 32], ["head has 3 strides but the fpn gives 4"]),
    ("model.arch.head.input_channel", 64, [("input_channel 64 differs from "
                                           "model.arch.fpn.out_channels 96")]),
    ("model.arch.head.kernel_size", 4, ["model.arch.head.kernel_size: expected an odd"]),
    ("model.arch.head.reg_max", -1, ["model.arch.head.reg_max"]),
    ("model.arch.head.conv_type", "Conv3D", ["not a NanoDet conv_type"]),
    ("model.arch.head.name", ["NanoDetPlusHead"], ["head ['NanoDetPlusHead'] is not supported"]),
    ("model.arch.backbone.out_stages", [4, 3, 2], ["out_stages [4, 3, 2]: each stage"]),
    ("model.arch.backbone.out_stages", [1, 2, 3], ["model.arch.backbone.out_stages: expected"]),
    ("model.arch.backbone.with_last_conv", "no", ["with_last_conv: expected true or false"]),
    ("model.arch.backbone.model_size", 1.0, ["model_size 1.0 is not a ShuffleNetV2 size"]),
    ("model.arch.fpn.in_channels", [1, 2, 3], [("in_channels [1, 2, 3] differ from the widths "
                                               "[116, 232, 464]")]),
    ("model.arch.fpn.in_channels", "116", ["model.arch.fpn.in_channels: expected a list"]),
    ("model.arch.fpn.out_channels", None, ["model.arch.fpn.out_channels", "got null"]),
    ("model.arch.fpn.num_extra_level", 9, ["model.arch.fpn.num_extra_level: expected"]),
    ("model.arch.fpn.use_res", [1], ["use_res=[1] is not supported"]),
    ("model.arch", None, ["model.arch: expected a mapping", "got null"]),
    ("model", None, ["model: expected a mapping", "got null"]),
])
def test_bad_values_name_key_and_expectation(tmp_path, dotted, value, phrases):
    refused(edited(PLUS_CFG, tmp_path / "bad.yml", dotted, value), *phrases)


def test_legacy_head_keys_are_checked_too(tmp_path):
    refused(edited(LEGACY_CFG, tmp_path / "bad.yml", "model.arch.head.share_cls_reg", "yes"),
            "model.arch.head.share_cls_reg: expected true or false")


@pytest.mark.parametrize("text, phrase", [
    ("", "empty config"),
    ("# only a comment\n", "empty config"),
    ("- a\n- b\n", "the top level: expected a mapping"),
    ("just a string", "the top level: expected a mapping"),
    ("model: [unclosed\n", "not valid YAML"),
    ("model: !!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
    ("model: !!python/name:os.system\n", "not valid YAML"),
    ("a: &a [*a]\nmodel: *a\n", "refers to a node that contains it"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
], ids=lambda v: v[:30] if isinstance(v, str) else v)
def test_unusable_documents(tmp_path, text, phrase):
    path = tmp_path / "cfg.yml"
    path.write_text(text)
    refused(path, phrase)
    assert not (tmp_path / "pwned").exists()


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The official Plus config whose backbone name is 9**9 = 387 million strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    cfg = yaml.safe_load(PLUS_CFG.read_text())
    cfg["model"]["arch"]["backbone"]["name"] = "BOMB"
    return "\n".join(lines) + "\n" + yaml.safe_dump(cfg).replace("BOMB", f"*l{levels - 1}")


def test_alias_bomb_is_refused_before_expanding(tmp_path):
    path = tmp_path / "bomb.yml"
    path.write_text(billion_laughs())  # printing the name would take minutes and gigabytes
    refused(path, "aliases expand to more than")


def test_ordinary_aliases_still_work(tmp_path):
    cfg = yaml.safe_load(PLUS_CFG.read_text())
    names = cfg.pop("class_names")
    text = yaml.safe_dump(cfg) + f"names: &names {names}\nclass_names: *names\n"
    path = tmp_path / "aliased.yml"
    path.write_text(text)
    assert read_config(path).class_names == tuple(names)


def test_oversized_and_special_files(tmp_path):
    big = tmp_path / "big.yml"
    big.write_bytes(PLUS_CFG.read_bytes() + b"#" * (2 << 20))
    refused(big, "too large")
    refused(tmp_path, "is a directory")
    refused(tmp_path / "nope.yml", "no such config file")
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    refused(fifo, "FIFO")  # would block forever if opened for a normal read
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"model: \xff\xfe\x00")
    refused(binary, "not valid YAML")
