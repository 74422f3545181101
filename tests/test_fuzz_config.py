"""Property-based fuzzing of the YAML config reader: whatever the file holds, the reader
returns a sane ArchSpec or raises one InputError naming the file - nothing else escapes."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import InputError
from heads.config import read_config
from heads.loader import check_model_size
from heads.spec import ArchSpec
from tests.conftest import LEGACY_CFG, PLUS_CFG

# FUZZ_EXAMPLES=5000 for a longer hunt
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "250")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WORDS = ["model", "arch", "backbone", "fpn", "head", "name", "ShuffleNetV2", "GhostPAN", "PAN",
         "NanoDetPlusHead", "NanoDetHead", "1.0x", "0.5x", "LeakyReLU", "DWConv", "num_classes",
         "in_channels", "strides", "class_names", "data", "val", "input_size", "normalize"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.integers(-3, 1100), st.floats(), st.text(max_size=12),
                    st.sampled_from(WORDS))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=8), inner, max_size=5),
    max_leaves=25)
CONFIGS = [yaml.safe_load(PLUS_CFG.read_text()), yaml.safe_load(LEGACY_CFG.read_text())]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config") / "cfg.yml"


def assert_sane(spec: ArchSpec) -> None:
    """What a config that reads must give: positive integers, matching names, finite stats."""
    h, n = spec.head, spec.neck
    ints = [h.num_classes, h.input_channel, h.feat_channels, h.stacked_convs, h.kernel_size,
            h.reg_max, n.out_channels, n.kernel_size, *n.in_channels, *h.strides]
    assert all(type(v) is int and v > 0 for v in ints), ints
    assert len(spec.class_names) == h.num_classes
    assert all(isinstance(name, str) for name in spec.class_names)
    assert spec.input_size is None or all(type(v) is int and v > 0 for v in spec.input_size)
    assert all(math.isfinite(v) for v in spec.mean_bgr + spec.std_bgr)
    assert min(spec.std_bgr) > 0


def read_only_input_errors(path: Path) -> None:
    """read_config (and the size check before building) raise nothing but InputError."""
    try:
        spec = read_config(path)
        check_model_size(spec, path)
    except InputError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(f"{path}: "), text
        return
    assert_sane(spec)


@FUZZ
@given(text=st.text(max_size=400))
def test_fuzz_any_text(scratch, text):
    scratch.write_text(text, encoding="utf-8")
    read_only_input_errors(scratch)


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzz_any_bytes(scratch, data):
    scratch.write_bytes(data)
    read_only_input_errors(scratch)


@FUZZ
@given(document=VALUES)
def test_fuzz_any_yaml_data(scratch, document):
    scratch.write_text(yaml.safe_dump(document))
    read_only_input_errors(scratch)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a parsed config (mappings and lists), containers included."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


ARCH_PATHS = [[p for p in paths(cfg) if p[:2] == ("model", "arch") or p[0] in ("data",
                                                                                 "class_names")]
              for cfg in CONFIGS]


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    """A real config with one to three values replaced or deleted, mostly where it is read."""
    which = draw(st.sampled_from([0, 1]))
    cfg = yaml.safe_load(yaml.safe_dump(CONFIGS[which]))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        candidates = ARCH_PATHS[which] if draw(st.booleans()) else paths(cfg)
        path = draw(st.sampled_from(candidates))
        parent = cfg
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
        if draw(st.integers(0, 4)) == 0:
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(VALUES)
    return cfg


@FUZZ
@given(cfg=mutated_configs())
def test_fuzz_mutated_official_configs(scratch, cfg):
    scratch.write_text(yaml.safe_dump(cfg))
    read_only_input_errors(scratch)
