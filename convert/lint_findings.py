"""What the ncnn lint reports: findings, the layers its rules read, and their collector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from parity.ncnn_param import Layer, LayerParam, ParamValue, ReadProblem
from parity.ncnn_tables import NcnnTables

Severity = Literal["error", "warning"]

CRASH = ("the firmware ignores load errors, so the recognition process crashes "
         "(segfault) on the device")
DROPPED = ("Net::load_param drops this layer and still returns 0; load_model then fails "
           "and the Net segfaults on use or destruction")
DROPPED_LATEST = "Net::load_param fails (returns -1)"


def dropped_layer(tables: Sequence[NcnnTables]) -> str:
    """What these ncnn do with a layer whose params or load_param fail."""
    if all(t.supports("load_param_returns_error") for t in tables):
        return DROPPED_LATEST
    return DROPPED


@dataclass(frozen=True)
class Finding:
    """One lint result; ``line`` is 1-based in the ``.param`` (0 = the file as a whole)."""

    severity: Severity
    line: int
    layer_type: str
    layer_name: str
    message: str
    table: str | None
    param_path: str = field(default="", compare=False)

    def __str__(self) -> str:
        where = f"{self.param_path or '<param>'}:{self.line}: "
        who = f"{self.layer_type} {self.layer_name}: " if self.layer_type or self.layer_name else ""
        suffix = f" [{self.table}]" if self.table else ""
        return f"{where}{who}{self.message}{suffix}"


@dataclass
class CheckedLayer:
    """A layer with the params this ncnn's ParamDict keeps (the last of each id).

    ``params_ok`` is False when ParamDict::load_param would fail on the line.
    """

    layer: Layer
    params: dict[int, LayerParam] = field(default_factory=dict)
    params_ok: bool = True

    @property
    def line(self) -> int:
        return self.layer.line

    @property
    def type(self) -> str:
        return self.layer.type

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def bottoms(self) -> list[str]:
        return self.layer.bottoms

    @property
    def tops(self) -> list[str]:
        return self.layer.tops

    def scalar(self, pid: int, default: float) -> int | float:
        """``pd.get(pid, default)`` as ncnn computes it (ints and floats share a union)."""
        param = self.params.get(pid)
        return default if param is None else param.number(default)

    def array(self, pid: int) -> list[ParamValue] | None:
        param = self.params.get(pid)
        if param is None or not param.is_array:
            return None
        return list(param.values)


class FindingCollector:
    """Gathers findings; ``table`` names the tables they come from (None: all of them)."""

    def __init__(self, path: str, table: str | None = None, dropped: str = DROPPED):
        self.path = path
        self.table = table
        self.dropped = dropped  # what happens when a layer's params or load_param fail
        self.items: list[Finding] = []

    def add(self, severity: Severity, line: int, layer: CheckedLayer | None, message: str,
            *, layer_type: str = "", layer_name: str = "") -> None:
        if layer is not None:
            layer_type, layer_name = layer.type, layer.name
        self.items.append(Finding(severity, line, layer_type, layer_name, message, self.table,
                                  self.path))

    def error(self, line: int, layer: CheckedLayer | None, message: str, **kw: str) -> None:
        self.add("error", line, layer, message, **kw)

    def warning(self, line: int, layer: CheckedLayer | None, message: str, **kw: str) -> None:
        self.add("warning", line, layer, message, **kw)

    def problem(self, problem: ReadProblem) -> None:
        self.add(problem.severity, problem.line, None, problem.message,
                 layer_type=problem.layer_type, layer_name=problem.layer_name)
