"""Stage descriptors and their registry: what a stage is, apart from how it runs.

A descriptor names a stage, places it in the pipeline order, says which stages
its tensors are compared with (the first of them that ran on the image, of the
same layout), whether it is the reference every stage's detections are
matched against, its extra checks, its colour in the HTML report, and the
factory that builds it for a loaded model and a model folder. A run writes the
descriptors of its stages into the report's stage table; everything after the
run (summary, gate, terminal table, JUnit, HTML) reads that table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from parity.layouts import Layout
from parity.report_types import StageRow

if TYPE_CHECKING:
    from parity.stages import Stage, StageInputs

# Extra checks a stage may carry, beside detections, tensors and errors.
DEVICE_INPUT = "device_input"  # its own preprocessing against the shared tensor (else: same bytes)
JSON_LINES = "json_lines"  # the JSON lines the firmware would print, kept and counted
EXTRA_CHECKS = (DEVICE_INPUT, JSON_LINES)

StageFactory = Callable[["StageDescriptor", "StageInputs"], "Stage"]


@dataclass(frozen=True)
class StageDescriptor:
    """One stage of the pipeline; `build` makes its runner (or says why it cannot run)."""

    name: str
    order: int  # place in the pipeline: a failure is blamed on the first failing stage
    build: StageFactory
    compared_with: tuple[str, ...] = ()  # tensor predecessors, first that ran wins
    layout: Layout | None = None  # None: the model folder's layout
    reference: bool = False  # its detections are what every stage is matched against
    checks: tuple[str, ...] = ()  # of EXTRA_CHECKS
    colour: str = "#9c755f"  # swatch and boxes in the HTML report

    def __post_init__(self) -> None:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", self.colour):
            raise ValueError(f"stage {self.name!r}: colour {self.colour!r} is not #rrggbb")
        unknown = [c for c in self.checks if c not in EXTRA_CHECKS]
        if unknown:
            raise ValueError(f"stage {self.name!r}: unknown check {unknown[0]!r}")

    def table_row(self, layout: Layout, reason: str | None) -> StageRow:
        """This stage's row of a report's stage table (`reason` why it was skipped)."""
        return StageRow(name=self.name, layout=str(layout),
                        status="skipped" if reason is not None else "ran", reason=reason,
                        order=self.order, reference=self.reference,
                        compared_with=list(self.compared_with), checks=list(self.checks),
                        colour=self.colour)


class StageRegistry:
    """Descriptors by name, listed in pipeline order."""

    def __init__(self) -> None:
        self._by_name: dict[str, StageDescriptor] = {}

    def register(self, descriptor: StageDescriptor) -> StageDescriptor:
        """Add a stage; its predecessors must be registered and come before it."""
        if descriptor.name in self._by_name:
            raise ValueError(f"stage {descriptor.name!r} is already registered")
        if any(d.order == descriptor.order for d in self._by_name.values()):
            raise ValueError(f"stage {descriptor.name!r}: order {descriptor.order} is taken")
        for name in descriptor.compared_with:
            earlier = self._by_name.get(name)
            if earlier is None or earlier.order >= descriptor.order:
                raise ValueError(f"stage {descriptor.name!r} is compared with {name!r}, "
                                 "which is not a registered earlier stage")
        if descriptor.reference and any(d.reference for d in self._by_name.values()):
            raise ValueError(f"stage {descriptor.name!r}: there is a reference stage already")
        self._by_name[descriptor.name] = descriptor
        return descriptor

    def unregister(self, name: str) -> None:
        """Remove a stage no other stage is compared with."""
        users = [d.name for d in self._by_name.values() if name in d.compared_with]
        if users:
            raise ValueError(f"stage {name!r} is compared with by {users[0]!r}")
        del self._by_name[name]

    def __getitem__(self, name: str) -> StageDescriptor:
        return self._by_name[name]

    def __iter__(self) -> Iterator[StageDescriptor]:
        return iter(sorted(self._by_name.values(), key=lambda d: d.order))

    def names(self) -> list[str]:
        return [d.name for d in self]

    def reference(self) -> StageDescriptor:
        """The reference stage, which must come first."""
        ordered = list(self)
        if not ordered or not ordered[0].reference:
            raise ValueError("the first registered stage must be the reference")
        return ordered[0]
