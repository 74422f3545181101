"""Rewrite strategies: how a loaded model becomes the graph its consumer decodes.

A strategy builds the export wrapper from a loaded model, writes its entry of
manifest.json (`rewrite`), reads that entry back with every key checked, and
describes itself for convert's summary. Invalid option combinations cannot be
constructed. `read_rewrite` finds a manifest's strategy in `REWRITES`, keyed by
the entry's `strategy` and the manifest's `layout`.

Adding a strategy = one class (here or in its own module) + `@register_rewrite`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import nn

from common.errors import InputError
from heads.detector import NanoDet
from heads.export import LegacyLayout, PlusNativeLayout
from heads.plus_to_legacy import (
    PlusToLegacy,
    Stride64,
    model_problem,
    options_problem,
    output_reg_max,
)
from heads.spec import ArchSpec

Layout = Literal["legacy", "plus-native"]
MANIFEST_KEY = "rewrite"  # the strategy's entry in manifest.json


class RewriteStrategy:
    """What the exported graph computes from the model, and in which layout."""

    name: ClassVar[str]  # the entry's `strategy`
    layout: ClassVar[Layout]  # the manifest's `layout`

    def model_problem(self, spec: ArchSpec) -> str | None:
        """Why a model of this architecture cannot be exported so, or None."""
        raise NotImplementedError

    def wrapper(self, model: NanoDet) -> nn.Module:
        """The module torch.onnx exports (ValueError if the model does not fit)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for convert's summary (the entry's `detail`)."""
        raise NotImplementedError

    def manifest_entry(self, spec: ArchSpec) -> dict[str, Any]:
        """The `rewrite` entry of manifest.json."""
        return {"strategy": self.name, "detail": self.describe()}

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], where: str | Path) -> RewriteStrategy:
        """The strategy an entry of this kind describes (its keys checked)."""
        return cls()

    def stride64_note(self, needed: int, detections: int) -> str | None:
        """What the stride-64 level means for this strategy, given how many of the
        reference detections need it; None when there is nothing to say."""
        return None


REWRITES: dict[tuple[str, Layout], type[RewriteStrategy]] = {}


def register_rewrite(strategy: type[RewriteStrategy]) -> type[RewriteStrategy]:
    """Class decorator: `read_rewrite` finds manifests naming this strategy and layout."""
    REWRITES[(strategy.name, strategy.layout)] = strategy
    return strategy


@register_rewrite
@dataclass(frozen=True)
class LegacyAsIs(RewriteStrategy):
    """A legacy NanoDet head: already the firmware's layout."""

    name: ClassVar[str] = "none"
    layout: ClassVar[Layout] = "legacy"

    def model_problem(self, spec: ArchSpec) -> str | None:
        return None if not spec.is_plus else \
            f"the legacy layout as is needs a legacy NanoDet head, not {spec.head.kind}"

    def wrapper(self, model: NanoDet) -> nn.Module:
        return LegacyLayout(model)

    def describe(self) -> str:
        return ("legacy NanoDet head: already the firmware's layout; only blob names and "
                "output shapes are set")


@register_rewrite
@dataclass(frozen=True)
class PlusNativeAsIs(RewriteStrategy):
    """NanoDet-Plus in its own exporter's layout (one output)."""

    name: ClassVar[str] = "none"
    layout: ClassVar[Layout] = "plus-native"

    def model_problem(self, spec: ArchSpec) -> str | None:
        return None if spec.is_plus else \
            f"the plus-native layout needs a NanoDet-Plus head, not {spec.head.kind}"

    def wrapper(self, model: NanoDet) -> nn.Module:
        return PlusNativeLayout(model)

    def describe(self) -> str:
        return "NanoDet-Plus native layout (one output)"


@register_rewrite
@dataclass(frozen=True)
class PlusToLegacyRewrite(RewriteStrategy):
    """NanoDet-Plus rewritten into the legacy layout (heads.plus_to_legacy).

    `centre_compensation=False` (only with stride64 drop) is the naive rewrite:
    outputs sliced as they are, which parity checks must catch.
    """

    stride64: Stride64 = "fold"
    centre_compensation: bool = True

    name: ClassVar[str] = "plus-to-legacy"
    layout: ClassVar[Layout] = "legacy"

    def __post_init__(self) -> None:
        problem = options_problem(self.stride64, self.centre_compensation)
        if problem:
            raise ValueError(problem)

    def model_problem(self, spec: ArchSpec) -> str | None:
        return model_problem(spec, self.stride64)

    def wrapper(self, model: NanoDet) -> nn.Module:
        return PlusToLegacy(model, stride64=self.stride64, compensate=self.centre_compensation)

    def describe(self) -> str:
        if not self.centre_compensation:
            return "outputs sliced as they are (no centre compensation); stride-64 level dropped"
        return ("distances re-expressed from the firmware's (x+0.5)*stride centres as two-hot "
                "bin distributions; "
                + ("each stride-64 prediction moved to the weakest of the four stride-32 cells "
                   "around its centre, where it scores higher"
                   if self.stride64 == "fold" else "stride-64 level dropped"))

    def manifest_entry(self, spec: ArchSpec) -> dict[str, Any]:
        return {"strategy": self.name, "centre_compensation": self.centre_compensation,
                "stride64": self.stride64,
                "reg_max_out": list(output_reg_max(spec.head.reg_max, self.stride64,
                                                   self.centre_compensation)),
                "detail": self.describe()}

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], where: str | Path) -> RewriteStrategy:
        stride64 = _entry_value(entry, "stride64", ("fold", "drop"), where)
        compensation = _entry_value(entry, "centre_compensation", (True, False), where)
        problem = options_problem(stride64, compensation)
        if problem:
            raise InputError(where, f"{MANIFEST_KEY}.centre_compensation: {problem}")
        return cls(stride64, compensation)

    def stride64_note(self, needed: int, detections: int) -> str | None:
        if self.stride64 == "fold":
            return (f"{needed} of {detections} detections need the stride-64 level: "
                    "--stride64 drop would lose them")
        return (f"dropped: {needed} of {detections} detections needed it "
                "(--stride64 fold keeps them)")


def _entry_value(entry: Mapping[str, Any], key: str, choices: tuple[Any, ...],
                 where: str | Path) -> Any:
    """entry[key], one of `choices` (compared with their types: True is not 1)."""
    at = f"{MANIFEST_KEY}.{key}"
    if key not in entry:
        raise InputError(where, f"{at}: missing")
    value = entry[key]
    if not any(type(value) is type(c) and value == c for c in choices):
        wanted = "true or false" if choices == (True, False) else \
            f"one of {', '.join(map(str, choices))}"
        shown = json.dumps(value, default=repr)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise InputError(where, f"{at}: must be {wanted}; not {shown}")
    return value


def read_rewrite(manifest: Mapping[str, Any], where: str | Path,
                 spec: ArchSpec | None = None) -> RewriteStrategy:
    """The strategy manifest.json (at `where`) records in `rewrite` for its `layout`.

    Every key it needs is checked: a missing or wrong one is an InputError naming
    `where` and the key path. With `spec`, the strategy must also fit that model.
    """
    if "layout" not in manifest:
        raise InputError(where, "layout: missing")
    layout = manifest["layout"]
    entry = manifest.get(MANIFEST_KEY)
    if not isinstance(entry, Mapping):
        raise InputError(where, f"{MANIFEST_KEY}: " + ("missing" if entry is None else
                                                       "must be an object"))
    names = sorted({name for name, _ in REWRITES})
    name = _entry_value(entry, "strategy", tuple(names), where)
    if (name, layout) not in REWRITES:
        raise InputError(where, f"{MANIFEST_KEY}.strategy: {name} does not write the "
                         f"{layout!r} layout")
    strategy = REWRITES[(name, layout)].from_entry(entry, where)
    problem = strategy.model_problem(spec) if spec is not None else None
    if problem:
        raise InputError(where, f"{MANIFEST_KEY}.strategy: {name} does not fit the "
                         f"checkpoint: {problem}")
    return strategy


__all__ = ["REWRITES", "LegacyAsIs", "PlusNativeAsIs", "PlusToLegacyRewrite",
           "RewriteStrategy", "read_rewrite", "register_rewrite"]
