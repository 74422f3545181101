"""Lint an NCNN ``.param`` (and its ``.bin``) against the ncnn the M5Stack UnitV2 links.

The UnitV2 firmware links an ncnn library built from master around commit 6afc736
(2021-02-22) with the hand-written headers of release 20201208, and it ignores load
errors: anything that ncnn cannot load crashes the whole recognition process on the
device.  What each ncnn version accepts is an ``NcnnTables`` object
(``parity.ncnn_tables``, data in ``parity/data/``); every rule asks the tables of
the target it lints for instead of knowing versions itself.

Targets (``LINT_TARGETS``):

``unitv2``
    Everything: file format, blob graph, ``.bin`` layout, and the old-version rules
    (layer table membership, param ids, enum ranges, 3-D-only blobs, Reduction axes)
    checked against *both* tables.  A finding from either table is an error.
``ncnn-latest``
    File format, blob graph, ``.bin`` layout and the ``load_param`` failures that
    current ncnn still has; the old-version rules do not apply.

The file is read by ``parity.ncnn_param`` (the project's one ``.param`` reader).
Behaviour modelled here comes from the ncnn source of that era (``src/net.cpp``,
``src/paramdict.cpp``, ``src/modelbin.cpp``, ``src/layer/*.cpp`` at 6afc736 and
tag 20201208; current master for ``ncnn-latest``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import click

from common.cli import OneLineCommand, one_line_errors
from parity.ncnn_param import (
    ARRAY_KEY_BASE,
    MAX_PARAM_COUNT,
    PARAM_MAGIC,
    TOKEN_MAX,
    Layer,
    LayerParam,
    Param,
    ParamValue,
    ReadProblem,
    float_bits_as_int,
    int_bits_as_float,
    short,
)
from parity.ncnn_tables import LayerSpec, NcnnTables, ncnn_tables

Severity = Literal["error", "warning"]
Target = Literal["unitv2", "ncnn-latest"]

LINT_TARGETS: dict[str, tuple[str, ...]] = {
    "unitv2": ("ncnn-20210222", "ncnn-20201208"),  # most likely library first
    "ncnn-latest": ("ncnn-latest",),
}
"""Lint target -> the names of the ncnn tables it is checked against."""

SHAPE_HINT_ID = 30  # net-level top shape hints, -23330=..., read by Net::load_param
STRING_MAX = 255  # newer ncnn: string params, 15 + 240 characters

# ModelBin::load(w, type=0) tags (first 4 bytes, little endian)
TAG_FP16 = 0x01306B47  # fp16 data, padded to 4 bytes
TAG_INT8 = 0x000D4B38  # int8 data, padded to 4 bytes
TAG_FP32_RAW = 0x0002C056  # fp32 data ("raw data with extra scaling")
QUANT_TABLE_BYTES = 256 * 4  # any other non-zero tag: 256-float table + uint8 indices

ACTIVATION_NAMES = {0: "none", 1: "ReLU", 2: "LeakyReLU", 3: "Clip", 4: "Sigmoid", 5: "Mish"}
ACTIVATION_PARAMS_NEEDED = {2: 1, 3: 2}  # LeakyReLU slope; Clip min,max
ACTIVATION_PARAMS_ID = {"Convolution": 10, "ConvolutionDepthWise": 10, "InnerProduct": 10,
                        "Deconvolution": 10, "DeconvolutionDepthWise": 10}

PERMUTE_3D_ORDERS = "0=WHC 1=HWC 2=WCH 3=CWH 4=HCW 5=CHW"

# Array params whose elements the layer reads through a typed pointer.  ParamDict
# stores each element as int or float according to its own token (no conversion), so
# an int token read through a float pointer (or the reverse) is reinterpreted bits.
ARRAY_ELEMENT_TYPES: dict[tuple[str, int], str] = {
    **{(t, 10): "float" for t in ACTIVATION_PARAMS_ID},
    ("Reduction", 3): "int",
    ("Crop", 9): "int",
    ("Crop", 10): "int",
    ("Crop", 11): "int",
    ("Slice", 0): "int",
    ("Squeeze", 3): "int",
    ("ExpandDims", 3): "int",
    ("Eltwise", 1): "float",
}

# Layer types that read the .bin in some ncnn but whose layout this linter does not
# model at all: the .bin walk stops at them.
WEIGHT_READERS_WITHOUT_MODEL = frozenset([
    "Convolution1D", "ConvolutionDepthWise1D", "Convolution3D", "ConvolutionDepthWise3D",
    "Deconvolution1D", "DeconvolutionDepthWise1D", "Deconvolution3D",
    "DeconvolutionDepthWise3D", "DeformableConv2D", "Gemm", "MultiHeadAttention", "Quantize",
    "RMSNorm",
])

FOUR_D_TYPES = frozenset(
    {"Convolution3D", "ConvolutionDepthWise3D", "Pooling3D", "Deconvolution3D",
     "DeconvolutionDepthWise3D"}
)

CRASH = ("the firmware ignores load errors, so the recognition process crashes "
         "(segfault) on the device")
DROPPED = ("Net::load_param drops this layer and still returns 0; load_model then fails "
           "and the Net segfaults on use or destruction")
DROPPED_LATEST = "Net::load_param fails (returns -1)"


def target_tables(target: str) -> tuple[NcnnTables, ...]:
    """The tables lint target ``target`` is checked against (ValueError if unknown)."""
    if target not in LINT_TARGETS:
        raise ValueError(f"unknown target {target!r}")
    return tuple(ncnn_tables(name) for name in LINT_TARGETS[target])


def dropped_layer(tables: Sequence[NcnnTables]) -> str:
    """What these ncnn do with a layer whose params or load_param fail."""
    if all(t.supports("load_param_returns_error") for t in tables):
        return DROPPED_LATEST
    return DROPPED


def _id_range_consequence(tables: Sequence[NcnnTables]) -> str:
    """What these ncnn do with a param id of 32 or more."""
    if len(tables) == 1 and tables[0].supports("param_id_bound_check"):
        return f"ParamDict rejects it, so {dropped_layer(tables)}"
    return "; ".join(
        f"ncnn {t.version}'s ParamDict rejects it ({dropped_layer([t])})"
        if t.supports("param_id_bound_check")
        else f"ncnn {t.version} has no bound check and writes past its "
             f"{MAX_PARAM_COUNT}-entry table (memory corruption)"
        for t in tables)


# --------------------------------------------------------------------------- findings


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


class _Collector:
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


# --------------------------------------------------------------------------- reading


@dataclass
class _Parsed:
    param: Param
    layers: list[CheckedLayer]


def _read(text: str, tables: Sequence[NcnnTables], out: _Collector) -> _Parsed:
    """The file as these ncnn read it; reader problems become findings, in line order."""
    param = Param.scan(text)
    by_line: dict[int, list[ReadProblem]] = {}
    for problem in param.problems:
        by_line.setdefault(problem.line, []).append(problem)
    layers = {layer.line: layer for layer in param.layers}
    checked: list[CheckedLayer] = []
    for line in sorted(set(by_line) | set(layers)):
        problems = by_line.get(line, [])
        for problem in problems:
            if not problem.stray_token:
                out.problem(problem)
        if line in layers:
            checked.append(_checked_layer(layers[line], tables, out))
        for problem in problems:
            if problem.stray_token:
                out.problem(problem)
                checked[-1].params_ok = False
    return _Parsed(param, checked)


def _checked_layer(layer: Layer, tables: Sequence[NcnnTables], out: _Collector) -> CheckedLayer:
    checked = CheckedLayer(layer)
    for param in layer.params:
        if not _accepted(checked, param, tables, out):
            checked.params_ok = False
            continue
        known = checked.params.get(param.id)
        if known is not None:
            out.warning(layer.line, checked, f"param id {param.id} is given twice "
                        f"({known.token!r} and {param.token!r}); ncnn keeps the last one")
        checked.params[param.id] = param
    return checked


def _accepted(layer: CheckedLayer, param: LayerParam, tables: Sequence[NcnnTables],
              out: _Collector) -> bool:
    """Whether ParamDict of these ncnn takes ``param``; an error finding when not."""
    for problem in param.problems:
        message = problem.message
        if problem.then == "drops_layer":
            message = f"{message}, so {out.dropped}"
        elif problem.then == "id_range":
            message = f"{message}: {_id_range_consequence(tables)}"
        out.error(layer.line, layer, message)
    if param.problems:
        return False
    if param.form == "string":
        return _string_accepted(layer, param, tables, out)
    if param.form == "list":
        return _list_accepted(layer, param, tables, out)
    return True


def _string_accepted(layer: CheckedLayer, param: LayerParam, tables: Sequence[NcnnTables],
                     out: _Collector) -> bool:
    if not all(t.supports("string_params") for t in tables):
        out.error(layer.line, layer, f"param {param.id}={short(param.value_text)!r} is a "
                  "string; this ncnn has only int/float params: ParamDict fails, so "
                  f"{out.dropped}")
        return False
    if len(param.value_text) > STRING_MAX:
        out.error(layer.line, layer, f"string param {param.id} is longer than {STRING_MAX} "
                  "characters: ParamDict fails")
        return False
    return True


def _list_accepted(layer: CheckedLayer, param: LayerParam, tables: Sequence[NcnnTables],
                   out: _Collector) -> bool:
    if not all(t.supports("list_params") for t in tables):
        out.error(layer.line, layer, f"param {param.id}={short(param.value_text)!r} uses the "
                  f"newer 'id=a,b,c' array syntax; this ncnn needs "
                  f"-{ARRAY_KEY_BASE + param.id}=len,a,b,c and reads this as one scalar, "
                  "misparsing the line")
        return False
    bad = [v.text for v in param.values if v.kind == "bad" or len(v.text) > TOKEN_MAX]
    if bad:
        out.error(layer.line, layer, f"list param {param.id}= has invalid element "
                  f"{short(bad[0])!r} (int/float of at most {TOKEN_MAX} characters)")
        return False
    return True


# --------------------------------------------------------------------------- graph


def _check_graph(parsed: _Parsed, out: _Collector) -> None:
    miscount = parsed.param.layer_count_problem()
    if miscount is not None:
        out.problem(miscount)
    declared_blobs = parsed.param.declared_blobs
    produced: dict[str, int] = {}
    later: dict[str, int] = {}
    for layer in parsed.layers:
        for top in layer.tops:
            later.setdefault(top, layer.line)
    slots = 0
    undefined: set[str] = set()
    consumers: dict[str, list[CheckedLayer]] = {}
    for layer in parsed.layers:
        for bottom in layer.bottoms:
            if bottom in produced:
                users = consumers.setdefault(bottom, [])
                if layer not in users:
                    users.append(layer)
                continue
            if bottom in undefined:
                continue
            undefined.add(bottom)
            slots += 1
            if bottom in later:
                where = f"only later, at line {later[bottom]} (layers must be in execution order)"
            else:
                where = "by no layer"
            out.error(layer.line, layer, f"bottom blob {bottom!r} is produced {where}: ncnn makes "
                      "it a new, never-computed blob, so extracting through this layer fails")
        for top in layer.tops:
            slots += 1
            if top in produced:
                out.error(layer.line, layer, f"top blob {top!r} was already produced at line "
                          f"{produced[top]}: ncnn adds a second blob of that name and every "
                          "consumer binds to the first")
                continue
            produced[top] = layer.line
    if declared_blobs is not None and declared_blobs != slots:
        if declared_blobs < slots:
            why = "Net::load_param writes past its blob array (memory corruption / crash)"
        else:
            why = "the count must match the file"
        out.error(2, None, f"line 2 declares {declared_blobs} blobs but the layers produce "
                  f"{slots} ({len(produced)} unique top names"
                  f"{f', {len(undefined)} undefined bottoms' if undefined else ''}): {why}")
    for blob, users in consumers.items():
        if len(users) > 1:
            first = users[1]
            out.warning(first.line, first, f"blob {blob!r} feeds {len(users)} layers without a "
                        "Split (converters insert Split layers; ncnn tracks one consumer per blob)")


# --------------------------------------------------------------------------- table rules


def _param_kind(default: str) -> str:
    if default == "Mat()":
        return "array"
    if "." in default or default.endswith("f") or "FLT" in default:
        return "float"
    return "int"


def _check_against_tables(layer: CheckedLayer, tables: NcnnTables, out: _Collector) -> None:
    """The rules of one ncnn version's tables for one layer."""
    spec = tables.layer(layer.type)
    if not _check_registered(layer, tables, out):
        return
    if spec is not None and spec.params is not None:
        _check_param_ids(layer, spec, out)
    _check_enums(layer, tables, out)


def _check_registered(layer: CheckedLayer, tables: NcnnTables, out: _Collector) -> bool:
    """Whether ``layer.type`` loads in this ncnn; False when the other rules do not apply."""
    spec = tables.layer(layer.type)
    if spec is None:
        if tables.supports("custom_layers"):
            out.warning(layer.line, layer, f"layer type {layer.type!r} is not a built-in layer "
                        f"of {tables.label}: loading needs a registered custom layer")
            return True
        extra = ""
        if layer.type in FOUR_D_TYPES:
            extra = " (a 3-D op on 4-D blobs; this ncnn's Mat has at most w, h, c)"
        out.error(layer.line, layer, f"layer type {layer.type!r} is not registered in "
                  f"{tables.label}{extra}: Net::load_param fails, and in this era its error path "
                  f"(Net::clear) segfaults; {CRASH}")
        return False
    if spec.enabled:
        return True
    if tables.supports("load_param_returns_error"):
        out.error(layer.line, layer, f"layer type {layer.type!r} is still registered with a "
                  f"null creator in {tables.label}: Net::load_param fails")
        return True
    out.error(layer.line, layer, f"layer type {layer.type!r} is registered with a null "
              f"creator (ncnn_add_layer({layer.type} OFF)): Net::load_param fails and "
              f"segfaults; {CRASH}")
    return False


def _check_param_ids(layer: CheckedLayer, spec: LayerSpec, out: _Collector) -> None:
    """Every param id is one the layer reads, written in the form it reads."""
    for pid, param in sorted(layer.params.items()):
        if pid == SHAPE_HINT_ID:
            continue
        if pid not in spec.params:
            out.error(layer.line, layer, _unknown_id_message(layer, pid, param, spec.params))
            continue
        name = spec.params[pid]
        kind = "array" if pid in spec.array_ids else _param_kind(spec.defaults.get(pid, "0"))
        if kind == "array" and not param.is_array:
            out.error(layer.line, layer, f"param {pid} ({name}) is an array "
                      f"(-{ARRAY_KEY_BASE + pid}=len,...) but is written as a scalar: the layer "
                      "reads an empty array, i.e. the value is silently ignored")
        elif kind != "array" and param.is_array:
            out.error(layer.line, layer, f"param {pid} ({name}) is a scalar but is written as "
                      f"an array ({param.token}): the layer reads an unset union, i.e. garbage")
        elif kind in ("int", "float") and param.values:
            value = param.values[0]
            if value.kind != kind and value.number is not None:
                seen = layer.scalar(pid, 0.0 if kind == "float" else 0)
                if seen != value.number:
                    out.error(layer.line, layer, f"param {pid} ({name}) is read as {kind} but "
                              f"{value.text!r} is written as {value.kind}: ParamDict does not "
                              f"convert, so the layer sees the raw bits ({seen!r}); write "
                              f"{_as_kind(value.number, kind)}")


def _as_kind(number: float, kind: str) -> str:
    if kind == "float":
        return f"{float(number):e}"
    if not math.isfinite(number):
        return "a finite integer"
    return str(int(number))


def _unknown_id_message(layer: CheckedLayer, pid: int, param: LayerParam,
                        params: Mapping[int, str]) -> str:
    known = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    if pid == 11 and layer.type in ("Reshape", "Input", "MemoryData"):
        what = ("11=d (depth) is a 4-D shape param; this ncnn's Mat has at most 3 dims (w, h, c), "
                "so it is silently ignored and the shape is wrong")
    else:
        what = (f"param id {pid} ({short(param.token)}) is not read by {layer.type}::load_param "
                "here: "
                "ncnn silently ignores it, so a newer converter's setting has no effect")
    return f"{what} (known ids: {known or 'none'})"


def _check_enums(layer: CheckedLayer, tables: NcnnTables, out: _Collector) -> None:
    """Enum params this ncnn accepts but cannot compute, or rejects."""
    t = layer.type
    limits = tables.enum_limits
    line = layer.line
    if t in ACTIVATION_PARAMS_ID:
        limit = limits.get("activation_type", {}).get(t)
        act = layer.scalar(9, 0)
        if limit is not None and not 0 <= act <= limit:
            names = ", ".join(f"{k}={v}" for k, v in ACTIVATION_NAMES.items() if k <= limit)
            out.error(line, layer, f"9=activation_type {act} is outside 0..{limit} ({names}): "
                      "this ncnn silently applies no activation (no fused HardSwish etc.); emit "
                      "a separate activation layer")
    elif t == "BinaryOp":
        op = layer.scalar(0, 0)
        limit = limits.get("binaryop_op_type")
        if limit is not None and not 0 <= op <= limit:
            out.error(line, layer, f"0=op_type {op} is outside 0..{limit} (ADD SUB MUL DIV MAX "
                      "MIN POW RSUB RDIV): this ncnn computes nothing for it (no RPOW/ATAN2)")
    elif t == "UnaryOp":
        op = layer.scalar(0, 0)
        limit = limits.get("unaryop_op_type")
        if limit is not None and not 0 <= op <= limit:
            out.error(line, layer, f"0=op_type {op} is outside 0..{limit}: this ncnn computes "
                      "nothing for it (no LOG10/ROUND/TRUNC)")
    elif t == "Interp":
        _check_interp(layer, out, tables.supports("interp_no_resize_is_warning"))
    elif t == "Permute":
        if not tables.supports("four_d_blobs"):
            _check_permute_3d(layer, out)
    elif t == "Softmax":
        _check_softmax(layer, out)
    elif t == "Reduction":
        if tables.supports("reduction_axes_without_batch"):
            _check_reduction_fixbug(layer, out)
        else:
            _check_reduction_old(layer, out)
    else:
        _check_layer_notes(layer, tables, out)


def _check_layer_notes(layer: CheckedLayer, tables: NcnnTables, out: _Collector) -> None:
    spec = tables.layer(layer.type)
    if spec is None or spec.params is None:
        return
    if layer.type == "Reorg":
        if layer.scalar(0, int(spec.defaults.get(0, "1"))) == 0:
            out.error(layer.line, layer, "0=stride is 0 (20201208's default when 0= is absent): "
                      "forward divides by it; always write 0=stride")
    elif spec.load_param_can_fail:
        out.warning(layer.line, layer, f"{layer.type}::load_param can reject its params and "
                    "this linter has no rule for it; check it by hand")


def _check_permute_3d(layer: CheckedLayer, out: _Collector) -> None:
    order = layer.scalar(0, 0)
    if not 0 <= order <= 5:
        four_d = " (a 4-D order of newer ncnn)" if 6 <= order <= 23 else ""
        out.error(layer.line, layer, f"0=order_type {order}{four_d} is outside 0..5 "
                  f"({PERMUTE_3D_ORDERS}): load_param accepts it but forward has no branch "
                  "for it and leaves the output blob empty")


def _check_interp(layer: CheckedLayer, out: _Collector, no_resize_is_warning: bool) -> None:
    rt = layer.scalar(0, 0)
    if not 0 <= rt <= 3:
        out.error(layer.line, layer, f"0=resize_type {rt} is outside 0..3: Interp::load_param "
                  f"rejects it, so {out.dropped}")
    elif rt == 0:
        given = "0=0" if 0 in layer.params else "no 0= (default 0)"
        msg = (f"resize_type is {given}: load_param accepts it but forward implements only "
               "1=nearest 2=bilinear 3=bicubic, so nothing is resized")
        if no_resize_is_warning:
            out.warning(layer.line, layer, msg)
        else:
            out.error(layer.line, layer, msg)


def _check_softmax(layer: CheckedLayer, out: _Collector) -> None:
    axis = layer.scalar(0, 0)
    fixbug0 = layer.scalar(1, 0)
    if axis != 0 and fixbug0 == 0:
        out.error(layer.line, layer, f"0=axis {axis} without 1=1 (fixbug0): Softmax::load_param "
                  f"rejects it ('param is too old'), so {out.dropped}; add 1=1")


def _check_reduction_fixbug(layer: CheckedLayer, out: _Collector) -> None:
    axes = layer.array(3)
    if axes and layer.scalar(5, 0) == 0:
        out.error(layer.line, layer, "Reduction with -23303 axes but without 5=1: current "
                  "ncnn's load_param rejects old-style (batch-axis) axes ('param is too old')")


def _old_axis_meaning(axis: int) -> str:
    """What reduction.cpp of 6afc736 / 20201208 does with one axes entry on a 3-D blob."""
    a = axis + 4 if axis < 0 else axis  # negative axis += dims + 1
    if 1 <= a <= 3:
        return "chw"[a - 1]
    return f"nothing (out-of-bounds axes_flag[{a - 1}])"


def _new_axis_meaning(axis: int) -> str:
    """What pnnx / ncnn >= 20220206 (5=1) mean by one axes entry on a 3-D blob."""
    a = axis + 3 if axis < 0 else axis
    return "chw"[a] if 0 <= a <= 2 else f"axis {axis}"


def _check_reduction_old(layer: CheckedLayer, out: _Collector) -> None:
    reduce_all = layer.scalar(1, 1)
    axes = layer.array(3)
    if reduce_all != 0:
        return
    if not axes:
        out.warning(layer.line, layer, "1=0 (reduce_all off) without -23303 axes: this ncnn "
                    "reduces nothing on a 2-D/3-D blob and leaves the output empty")
        return
    written = ",".join(v.text for v in axes)
    ints = [v.number for v in axes if isinstance(v.number, int)]
    if len(ints) == len(axes):
        new = ",".join(_new_axis_meaning(a) for a in ints)
        old = ", ".join(_old_axis_meaning(a) for a in ints)
        reduced = {_old_axis_meaning(a) for a in ints} & set("chw")
        result = "the output blob is left empty" if not reduced else "the result is wrong"
        mapping = (f"on a 3-D blob, [{written}] means [{new}] pnnx-style but this ncnn reduces "
                   f"[{old}], so {result}, silently")
    else:
        mapping = f"axes [{written}] are not all ints"
    origin = ("5=1 marks pnnx / ncnn >= 20220206 axes" if layer.scalar(5, 0)
              else "without 5=1 the file does not say which convention its converter used")
    out.error(layer.line, layer, f"Reduction over explicit axes (1=0 -23303={len(axes)},"
              f"{written}): reduction.cpp of this ncnn reads axes ONNX-style WITH the batch "
              "axis (3-D blob: 1=c 2=h 3=w, negative += dims+1; 0 is an out-of-bounds write to "
              "axes_flag[-1], undefined behaviour that marks no axis), while pnnx and ncnn >= 20220206 write them without "
              f"it (0=c 1=h 2=w); {mapping} ({origin}). Use 1=1 (reduce_all) or express the "
              "op with other layers")


# --------------------------------------------------------------------------- generic rules


def _check_generic(layer: CheckedLayer, tables: Sequence[NcnnTables], out: _Collector) -> None:
    """Rules that hold for every ncnn (the tables only shape a message)."""
    line = layer.line
    # net-level shape hints
    hint = layer.params.get(SHAPE_HINT_ID)
    if hint is not None:
        if not hint.is_array:
            out.warning(line, layer, f"{SHAPE_HINT_ID}= shape hints must be an array "
                        f"(-{ARRAY_KEY_BASE + SHAPE_HINT_ID}=4*top_count,dims,w,h,c,...); "
                        "ignored")
        elif len(hint.values) < 4 * len(layer.tops):
            out.error(line, layer, f"-{ARRAY_KEY_BASE + SHAPE_HINT_ID}= shape hints have "
                      f"{len(hint.values)} values but {len(layer.tops)} top blob(s) need "
                      f"{4 * len(layer.tops)}: Net::load_param reads past the array")
        elif not all(t.supports("four_d_blobs") for t in tables):
            for j in range(len(layer.tops)):
                dims = hint.values[4 * j].number
                if isinstance(dims, int) and dims > 3:
                    out.warning(line, layer, f"shape hint for top {j} has dims={dims}; this "
                                "ncnn has at most 3 dims (the hint is ignored)")
    # fused activation params
    if layer.type in ACTIVATION_PARAMS_ID:
        act = layer.scalar(9, 0)
        need = ACTIVATION_PARAMS_NEEDED.get(act)
        if need:
            arr = layer.array(ACTIVATION_PARAMS_ID[layer.type]) or []
            if len(arr) < need:
                out.error(line, layer, f"9=activation_type {act} ({ACTIVATION_NAMES[act]}) "
                          f"needs {need} value(s) in -23310=... but has {len(arr)}: forward reads "
                          "past an empty Mat (crash)")
    # typed array elements
    for pid, param in layer.params.items():
        kind = ARRAY_ELEMENT_TYPES.get((layer.type, pid))
        if kind is None or param.form != "array":
            continue
        for i, value in enumerate(param.values):
            if value.kind == kind or value.number is None:
                continue
            number = value.number
            seen = int_bits_as_float(number) if kind == "float" else float_bits_as_int(number)
            if seen != number:
                out.error(line, layer, f"array {param.key}= element {i} {value.text!r} is "
                          f"written as {value.kind} but read as {kind}: ParamDict stores each "
                          f"element as written, so the layer sees {seen!r}; write "
                          f"{_as_kind(number, kind)}")
                break


# --------------------------------------------------------------------------- .bin layout

# A read is (what, element_count, type): type 0 = tagged weight blob, 1 = raw fp32.
Read = tuple[str, int, int]
Supports = Callable[[str], bool]  # does every table of the target have this capability?
ReadModel = Callable[[CheckedLayer, Supports], list[Read]]


def _conv_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    if supports("dynamic_weights") and layer.scalar(19, 0):  # dynamic_weight: weights come from a blob
        return []
    num_output = layer.scalar(0, 0)
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", num_output, 1))
    int8 = layer.scalar(8, 0)
    if int8:
        reads += [("weight_data_int8_scales", num_output, 1), ("bottom_blob_int8_scale", 1, 1)]
        if supports("int8_scale_variants") and int8 > 100:
            reads.append(("top_blob_int8_scale", 1, 1))
    return reads


def _convdw_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    if supports("dynamic_weights") and layer.scalar(19, 0):
        return []
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    int8 = layer.scalar(8, 0)
    variants = supports("int8_scale_variants")
    if int8 in ((1, 101) if variants else (1,)):
        reads += [("weight_data_int8_scales", layer.scalar(7, 1), 1),
                  ("bottom_blob_int8_scales", 1, 1)]
    elif int8 in ((2, 102) if variants else (2,)):
        reads += [("weight_data_int8_scales", 1, 1), ("bottom_blob_int8_scales", 1, 1)]
    if variants and int8 > 100:
        reads.append(("top_blob_int8_scales", 1, 1))
    return reads


def _deconv_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    if supports("dynamic_weights") and layer.scalar(28, 0):
        return []
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    return reads


def _innerproduct_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    num_output = layer.scalar(0, 0)
    reads: list[Read] = [("weight_data", layer.scalar(2, 0), 0)]
    if layer.scalar(1, 0):
        reads.append(("bias_data", num_output, 1))
    if layer.scalar(8, 0):
        reads += [("weight_data_int8_scales", num_output, 1), ("bottom_blob_int8_scale", 1, 1)]
    return reads


def _batchnorm_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    c = layer.scalar(0, 0)
    return [(name, c, 1) for name in ("slope_data", "mean_data", "var_data", "bias_data")]


def _scale_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    size = layer.scalar(0, 0)
    if size == -233:  # scale comes from a second blob
        return []
    reads: list[Read] = [("scale_data", size, 1)]
    if layer.scalar(1, 0):
        reads.append(("bias_data", size, 1))
    return reads


def _memorydata_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    w, h, c = layer.scalar(0, 0), layer.scalar(1, 0), layer.scalar(2, 0)
    d = layer.scalar(11, 0) if supports("four_d_blobs") else 0
    load_type = layer.scalar(21, 1) if supports("memorydata_load_type") else 1
    if d:
        return [("data", w * h * d * c, load_type)]
    if c:
        return [("data", w * h * c, load_type)]
    if h:
        return [("data", w * h, load_type)]
    if w:
        return [("data", w, load_type)]
    return []


def _embed_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    reads: list[Read] = [("weight_data", layer.scalar(3, 0), 0)]
    if layer.scalar(2, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    if supports("embed_int8") and layer.scalar(18, 0):
        reads.append(("weight_data_int8_scale", 1, 1))
    return reads


def _layernorm_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    if supports("layernorm_affine_flag") and not layer.scalar(2, 1):
        return []
    c = layer.scalar(0, 0)
    return [("gamma_data", c, 1), ("beta_data", c, 1)]


def _affine_norm_reads(channels_id: int, affine_id: int) -> ReadModel:
    def reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
        if not layer.scalar(affine_id, 1):
            return []
        c = layer.scalar(channels_id, 0)
        return [("gamma_data", c, 1), ("beta_data", c, 1)]
    return reads


def _single_raw(what: str, size_id: int, flag_id: int | None = None) -> ReadModel:
    def reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
        if flag_id is not None and not layer.scalar(flag_id, 0):
            return []
        return [(what, layer.scalar(size_id, 0), 1)]
    return reads


def _recurrent_reads(gates: int, bias_rows: int) -> ReadModel:
    def reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
        num_output = layer.scalar(0, 0)
        wds = layer.scalar(1, 0)
        nd = 2 if layer.scalar(2, 0) == 2 else 1
        if num_output == 0:
            raise _ModelError("0=num_output is 0: load_model divides weight_data_size by it "
                              "(division by zero)")
        size = int(wds / nd / num_output / gates)  # C integer division, truncating
        return [("weight_xc_data", size * num_output * gates * nd, 0),
                ("bias_c_data", num_output * bias_rows * nd, 0),
                ("weight_hc_data", num_output * num_output * gates * nd, 0)]
    return reads


class _ModelError(Exception):
    pass


WEIGHT_MODELS: dict[str, ReadModel] = {
    "Convolution": _conv_reads,
    "ConvolutionDepthWise": _convdw_reads,
    "Deconvolution": _deconv_reads,
    "DeconvolutionDepthWise": _deconv_reads,
    "InnerProduct": _innerproduct_reads,
    "BatchNorm": _batchnorm_reads,
    "Bias": _single_raw("bias_data", 0),
    "Scale": _scale_reads,
    "PReLU": _single_raw("slope_data", 0),
    "MemoryData": _memorydata_reads,
    "Embed": _embed_reads,
    "LayerNorm": _layernorm_reads,
    "GroupNorm": _affine_norm_reads(1, 3),
    "InstanceNorm": _affine_norm_reads(0, 2),
    "Normalize": _single_raw("scale_data", 3),
    "Padding": _single_raw("per_channel_pad_data", 6, flag_id=6),
    "Dequantize": _single_raw("bias_data", 2, flag_id=1),
    "Requantize": _single_raw("bias_data", 3, flag_id=2),
    "RNN": _recurrent_reads(1, 1),
    "LSTM": _recurrent_reads(4, 4),
    "GRU": _recurrent_reads(3, 4),
}


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def _walk_bin(layers: list[CheckedLayer], data: bytes, tables: Sequence[NcnnTables],
              target: str, out: _Collector) -> None:
    def supports(capability: str) -> bool:
        return all(t.supports(capability) for t in tables)

    unmodelled_layouts = frozenset().union(*(t.unmodelled_weight_layouts for t in tables))
    size = len(data)
    offset = 0
    last_reader: CheckedLayer | None = None
    for layer in layers:
        model = WEIGHT_MODELS.get(layer.type)
        unmodelled = layer.type in unmodelled_layouts or (
            model is None and layer.type in WEIGHT_READERS_WITHOUT_MODEL)
        if unmodelled:
            out.warning(layer.line, layer, f"{layer.type} reads weights from the .bin but its "
                        f"layout is not modelled for {target}: .bin size not checked from "
                        f"here on (offset {offset})")
            return
        if model is None:
            continue
        if not layer.params_ok:
            out.warning(layer.line, layer, "params did not parse, so the .bin size is not "
                        f"checked from here on (offset {offset})")
            return
        try:
            reads = model(layer, supports)
        except _ModelError as exc:
            out.error(layer.line, layer, f"{exc}; .bin not checked further")
            return
        for what, count, load_type in reads:
            if count <= 0:
                out.error(layer.line, layer, f"{what} has {count} elements: ModelBin::load "
                          "returns an empty Mat and load_model fails; .bin not checked further")
                return
            start = offset
            if load_type == 0:
                if size - offset < 4:
                    out.error(layer.line, layer, _short_msg(what, "its 4-byte type tag", 4,
                                                            offset, size))
                    return
                (tag,) = struct.unpack_from("<I", data, offset)
                offset += 4
                if tag == 0 or tag == TAG_FP32_RAW:
                    need, desc = count * 4, f"{count} fp32"
                elif tag == TAG_FP16:
                    need, desc = _align4(count * 2), f"{count} fp16 (padded to 4 bytes)"
                elif tag == TAG_INT8:
                    need, desc = _align4(count), f"{count} int8 (padded to 4 bytes)"
                else:
                    need = QUANT_TABLE_BYTES + _align4(count)
                    desc = f"a 256-float table + {count} uint8 indices"
                    out.warning(layer.line, layer, f"{what} has type tag 0x{tag:08X} at .bin "
                                f"offset {start}, not 0 / fp16 0x{TAG_FP16:08X} / int8 "
                                f"0x{TAG_INT8:08X} / fp32 0x{TAG_FP32_RAW:08X}; ncnn reads it "
                                "as 8-bit table-quantized data (often means param and bin are "
                                "out of step)")
            else:
                need, desc = count * 4, f"{count} fp32"
            if size - offset < need:
                out.error(layer.line, layer, _short_msg(what, desc, need, offset, size))
                return
            offset += need
            last_reader = layer
    if offset < size:
        if last_reader is not None:
            out.warning(last_reader.line, last_reader, f".bin has {size - offset} bytes more "
                        f"than the param reads ({offset} of {size}, this is the last layer "
                        "that reads weights): ncnn ignores them, but param and bin may not "
                        "belong together")
        else:
            out.warning(0, None, f".bin has {size} bytes but no layer reads weights")


def _short_msg(what: str, desc: str, need: int, offset: int, size: int) -> str:
    return (f".bin too short: {what} needs {need} bytes ({desc}) at offset {offset} but only "
            f"{max(size - offset, 0)} remain (.bin is {size} bytes); load_model fails at this "
            "layer and pipeline creation can segfault: the recognition process crashes on the "
            "device")


# --------------------------------------------------------------------------- entry points


def _merge_tables(per_table: list[list[Finding]], path: str) -> list[Finding]:
    merged: dict[tuple, list[str]] = {}
    order: list[tuple] = []
    for findings in per_table:
        for f in findings:
            key = (f.severity, f.line, f.layer_type, f.layer_name, f.message)
            if key not in merged:
                merged[key] = []
                order.append(key)
            if f.table and f.table not in merged[key]:
                merged[key].append(f.table)
    result = []
    for key in order:
        tables = merged[key]
        severity, line, ltype, lname, message = key
        result.append(Finding(severity, line, ltype, lname, message,
                              ",".join(tables) if tables else None, path))
    return result


def _table_findings(layers: list[CheckedLayer], tables: Sequence[NcnnTables],
                    path: str) -> list[Finding]:
    """Each table's rules; a finding names its tables when the target has several."""
    per_table = []
    for table in tables:
        out = _Collector(path, table.name if len(tables) > 1 else None,
                         dropped_layer([table]))
        for layer in layers:
            _check_against_tables(layer, table, out)
        per_table.append(out.items)
    return _merge_tables(per_table, path) if len(tables) > 1 else per_table[0]


def _read_text(param_path: Path, out: _Collector) -> str | None:
    """The .param as text (carriage returns dropped); None after an error finding."""
    try:
        raw = param_path.read_bytes()
    except OSError as exc:
        out.error(0, None, f"cannot read the .param: {exc}")
        return None
    if not raw.strip():
        out.error(0, None, "the .param is empty")
        return None
    if raw.startswith(struct.pack("<i", int(PARAM_MAGIC))):
        out.error(0, None, "this is a binary .param.bin (ncnn2mem output), not a text .param")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8", errors="replace")
        line = raw[: exc.start].count(b"\n") + 1
        out.error(line, None, "the .param is not UTF-8 text (binary or corrupted?)")
    if "\0" in text:
        out.error(text[: text.index("\0")].count("\n") + 1, None, "the .param contains NUL bytes")
        return None
    return text.replace("\r", "")


def _bin_findings(param_path: Path, bin_path: Path | None, layers: list[CheckedLayer],
                  tables: Sequence[NcnnTables], target: str) -> list[Finding]:
    out = _Collector(str(param_path))
    if bin_path is None:
        candidate = param_path.with_suffix(".bin")
        if candidate.is_file():
            bin_path = candidate
        else:
            out.warning(0, None, f"no .bin given and {candidate.name} does not exist: .bin "
                        "layout not checked")
    if bin_path is not None:
        try:
            data = Path(bin_path).read_bytes()
        except OSError as exc:
            out.error(0, None, f"cannot read the .bin {bin_path}: {exc}")
        else:
            _walk_bin(layers, data, tables, target, out)
    return out.items


def lint_param(param_path: Path, bin_path: Path | None = None, target: Target = "unitv2",
               tables: Sequence[NcnnTables] | None = None) -> list[Finding]:
    """Lint ``param_path`` (and its ``.bin``) for ``target``; findings sorted by line.

    ``tables`` (the ncnn versions to check against) default to those of ``target``
    (``LINT_TARGETS``); given, ``target`` only names them in messages.
    ``bin_path`` defaults to the ``.bin`` next to the ``.param`` (same stem); if that
    does not exist the ``.bin`` checks are skipped with a warning.
    """
    if tables is None:
        tables = target_tables(target)
    elif not tables:
        raise ValueError("lint_param needs at least one table")
    param_path = Path(param_path)
    path = str(param_path)
    out = _Collector(path, dropped=dropped_layer(tables))
    text = _read_text(param_path, out)
    if text is None:
        return _sorted(out.items)
    parsed = _read(text, tables, out)
    _check_graph(parsed, out)
    for layer in parsed.layers:
        _check_generic(layer, tables, out)
    findings = out.items + _table_findings(parsed.layers, tables, path)
    findings += _bin_findings(param_path, bin_path, parsed.layers, tables, target)
    return _sorted(findings)


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.line, f.severity != "error"))


@click.command("ncnn-lint", cls=OneLineCommand,
               help="Lint an NCNN .param (and its .bin) against the ncnn of a target.")
@click.argument("param", type=click.Path(path_type=Path))
@click.option("--bin", "bin_path", type=click.Path(path_type=Path), default=None,
              help="The weights (default: the .bin next to PARAM).")
@click.option("--target", type=click.Choice(sorted(LINT_TARGETS)), default="unitv2",
              show_default=True, help="The ncnn to lint against.")
@one_line_errors("ncnn-lint")
def main(param: Path, bin_path: Path | None, target: str) -> int:
    """Print every finding; exit 1 when one is an error."""
    findings = lint_param(param, bin_path, target)
    for f in findings:
        click.echo(f"{f.severity.upper()}: {f}")
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    click.echo(f"{errors} error(s), {warnings} warning(s)", err=True)
    return 1 if errors else 0


if __name__ == "__main__":
    main(prog_name="python -m convert.ncnn_lint")
