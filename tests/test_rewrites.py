"""Rewrite strategies (heads/rewrites.py): manifest entries, reading them back, the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from common.errors import InputError
from heads.detector import build_detector
from heads.export import LegacyLayout, PlusNativeLayout
from heads.plus_to_legacy import PlusToLegacy
from heads.rewrites import (
    REWRITES,
    LegacyAsIs,
    PlusNativeAsIs,
    PlusToLegacyRewrite,
    RewriteStrategy,
    read_rewrite,
    register_rewrite,
)
from tests.conftest import small_spec

PLUS, LEGACY = small_spec(True), small_spec(False)
FOLD_DETAIL = ("distances re-expressed from the firmware's (x+0.5)*stride centres as two-hot "
               "bin distributions; each stride-64 prediction moved to the weakest of the four "
               "stride-32 cells around its centre, where it scores higher")

# manifest.json's `rewrite` as convert wrote it before strategies were objects
WRITTEN_BEFORE = [
    (LegacyAsIs(), LEGACY,
     ('{"strategy": "none", "detail": "legacy NanoDet head: already the firmware\'s layout; '
      'only blob names and output shapes are set"}')),
    (PlusNativeAsIs(), PLUS,
     '{"strategy": "none", "detail": "NanoDet-Plus native layout (one output)"}'),
    (PlusToLegacyRewrite("fold"), PLUS,
     ('{"strategy": "plus-to-legacy", "centre_compensation": true, "stride64": "fold", '
      f'"reg_max_out": [8, 8, 15], "detail": "{FOLD_DETAIL}"}}')),
]


def manifest_of(strategy: RewriteStrategy, spec) -> dict:
    return {"layout": strategy.layout, "rewrite": strategy.manifest_entry(spec)}


@pytest.mark.parametrize("strategy, spec, before", WRITTEN_BEFORE)
def test_entries_are_written_as_before(strategy, spec, before):
    assert spec.head.reg_max == 7
    assert json.dumps(strategy.manifest_entry(spec)) == before
    assert strategy.describe() == json.loads(before)["detail"]


@pytest.mark.parametrize("strategy", [LegacyAsIs(), PlusNativeAsIs(), PlusToLegacyRewrite("fold"),
                                      PlusToLegacyRewrite("drop"),
                                      PlusToLegacyRewrite("drop", centre_compensation=False)])
def test_entries_read_back_as_the_strategy(strategy):
    spec = LEGACY if isinstance(strategy, LegacyAsIs) else PLUS
    assert read_rewrite(manifest_of(strategy, spec), "manifest.json", spec) == strategy


@pytest.mark.parametrize("strategy, spec, kind", [
    (LegacyAsIs(), LEGACY, LegacyLayout), (PlusNativeAsIs(), PLUS, PlusNativeLayout),
    (PlusToLegacyRewrite("drop"), PLUS, PlusToLegacy)])
def test_each_strategy_builds_its_wrapper(strategy, spec, kind):
    wrapper = strategy.wrapper(build_detector(spec))
    assert type(wrapper) is kind
    assert strategy.model_problem(spec) is None


def test_fold_without_compensation_cannot_be_constructed():
    with pytest.raises(ValueError, match="needs the centre compensation"):
        PlusToLegacyRewrite("fold", centre_compensation=False)
    with pytest.raises(ValueError, match="fold or drop"):
        PlusToLegacyRewrite("sometimes")


def plus_entry(**changes) -> dict:
    entry = PlusToLegacyRewrite("fold").manifest_entry(PLUS)
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


@pytest.mark.parametrize("manifest, message", [
    ({"layout": "legacy", "rewrite": plus_entry(stride64=None)}, "rewrite.stride64: missing"),
    ({"layout": "legacy", "rewrite": plus_entry(stride64="sometimes")},
     "rewrite.stride64: must be one of fold, drop; not \"sometimes\""),
    ({"layout": "legacy", "rewrite": plus_entry(centre_compensation=None)},
     "rewrite.centre_compensation: missing"),
    ({"layout": "legacy", "rewrite": plus_entry(centre_compensation=1)},
     "rewrite.centre_compensation: must be true or false; not 1"),
    ({"layout": "legacy", "rewrite": plus_entry(centre_compensation=False)},
     "rewrite.centre_compensation: folding stride 64 needs the centre compensation"),
    ({"layout": "plus-native", "rewrite": plus_entry()},
     "rewrite.strategy: plus-to-legacy does not write the 'plus-native' layout"),
    ({"layout": "legacy", "rewrite": {"strategy": "naive"}}, "rewrite.strategy: must be one of"),
    ({"layout": "legacy", "rewrite": {}}, "rewrite.strategy: missing"),
    ({"layout": "legacy", "rewrite": []}, "rewrite: must be an object"),
    ({"layout": "legacy"}, "rewrite: missing"),
    ({"rewrite": plus_entry()}, "layout: missing"),
    ({"layout": "legacy", "rewrite": {"strategy": "none"}},
     "rewrite.strategy: none does not fit the checkpoint"),  # a Plus checkpoint
])
def test_a_missing_or_wrong_key_is_named(manifest, message):
    with pytest.raises(InputError) as error:
        read_rewrite(manifest, "out/manifest.json", PLUS)
    assert error.value.where == "out/manifest.json"
    assert error.value.problem.startswith(message), error.value.problem


def test_a_strategy_that_does_not_fit_the_model_is_refused():
    three_levels = SimpleNamespace(is_plus=True, head=SimpleNamespace(strides=(8, 16, 32)))
    assert "stride-64 level" in PlusToLegacyRewrite("fold").model_problem(three_levels)
    assert PlusToLegacyRewrite("drop").model_problem(three_levels) is None
    assert LegacyAsIs().model_problem(PLUS) and PlusNativeAsIs().model_problem(LEGACY)
    with pytest.raises(InputError, match="does not fit the checkpoint"):
        read_rewrite(manifest_of(PlusToLegacyRewrite("drop"), PLUS), "manifest.json", LEGACY)


def test_stride64_notes_only_where_the_level_matters():
    assert PlusToLegacyRewrite("fold").stride64_note(3, 40) == (
        "3 of 40 detections need the stride-64 level: --stride64 drop would lose them")
    assert PlusToLegacyRewrite("drop").stride64_note(3, 40).startswith("dropped: 3 of 40")
    assert LegacyAsIs().stride64_note(3, 40) is None
    assert PlusNativeAsIs().stride64_note(3, 40) is None


def test_adding_a_strategy_is_one_class_and_one_registry_line(monkeypatch):
    """A new strategy: written to the manifest, read back, its wrapper built."""
    monkeypatch.setattr("heads.rewrites.REWRITES", dict(REWRITES))  # the test's own registry

    @register_rewrite
    @dataclass(frozen=True)
    class Mirrored(RewriteStrategy):
        name: ClassVar[str] = "mirrored"
        layout: ClassVar[str] = "legacy"

        def model_problem(self, spec):
            return None if not spec.is_plus else "legacy heads only"

        def wrapper(self, model):
            return torch.nn.Sequential(torch.nn.Identity(), LegacyLayout(model))

        def describe(self):
            return "the legacy layout of a mirrored input"

    manifest = manifest_of(Mirrored(), LEGACY)
    assert manifest["rewrite"] == {"strategy": "mirrored",
                                   "detail": "the legacy layout of a mirrored input"}
    assert read_rewrite(manifest, "manifest.json", LEGACY) == Mirrored()
    assert isinstance(Mirrored().wrapper(build_detector(LEGACY))[1], LegacyLayout)
