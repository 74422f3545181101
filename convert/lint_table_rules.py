"""The lint rules one ncnn version's tables decide: layer types, param ids, enum ranges."""

from __future__ import annotations

import math
from collections.abc import Mapping

from convert.lint_findings import CRASH, CheckedLayer, FindingCollector
from parity.ncnn_param import ARRAY_KEY_BASE, LayerParam, short
from parity.ncnn_tables import LayerSpec, NcnnTables

SHAPE_HINT_ID = 30  # net-level top shape hints, -23330=..., read by Net::load_param

ACTIVATION_NAMES = {0: "none", 1: "ReLU", 2: "LeakyReLU", 3: "Clip", 4: "Sigmoid", 5: "Mish"}
ACTIVATION_PARAMS_ID = {"Convolution": 10, "ConvolutionDepthWise": 10, "InnerProduct": 10,
                        "Deconvolution": 10, "DeconvolutionDepthWise": 10}
PERMUTE_3D_ORDERS = "0=WHC 1=HWC 2=WCH 3=CWH 4=HCW 5=CHW"
FOUR_D_TYPES = frozenset(
    {"Convolution3D", "ConvolutionDepthWise3D", "Pooling3D", "Deconvolution3D",
     "DeconvolutionDepthWise3D"}
)


def _param_kind(default: str) -> str:
    if default == "Mat()":
        return "array"
    if "." in default or default.endswith("f") or "FLT" in default:
        return "float"
    return "int"


def check_against_tables(layer: CheckedLayer, tables: NcnnTables, out: FindingCollector) -> None:
    """The rules of one ncnn version's tables for one layer."""
    spec = tables.layer(layer.type)
    if not _check_registered(layer, tables, out):
        return
    if spec is not None and spec.params is not None:
        _check_param_ids(layer, spec, out)
    _check_enums(layer, tables, out)


def _check_registered(layer: CheckedLayer, tables: NcnnTables, out: FindingCollector) -> bool:
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


def _check_param_ids(layer: CheckedLayer, spec: LayerSpec, out: FindingCollector) -> None:
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
                              f"{written_as(value.number, kind)}")


def written_as(number: float, kind: str) -> str:
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


def _check_enums(layer: CheckedLayer, tables: NcnnTables, out: FindingCollector) -> None:
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


def _check_layer_notes(layer: CheckedLayer, tables: NcnnTables, out: FindingCollector) -> None:
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


def _check_permute_3d(layer: CheckedLayer, out: FindingCollector) -> None:
    order = layer.scalar(0, 0)
    if not 0 <= order <= 5:
        four_d = " (a 4-D order of newer ncnn)" if 6 <= order <= 23 else ""
        out.error(layer.line, layer, f"0=order_type {order}{four_d} is outside 0..5 "
                  f"({PERMUTE_3D_ORDERS}): load_param accepts it but forward has no branch "
                  "for it and leaves the output blob empty")


def _check_interp(layer: CheckedLayer, out: FindingCollector, no_resize_is_warning: bool) -> None:
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


def _check_softmax(layer: CheckedLayer, out: FindingCollector) -> None:
    axis = layer.scalar(0, 0)
    fixbug0 = layer.scalar(1, 0)
    if axis != 0 and fixbug0 == 0:
        out.error(layer.line, layer, f"0=axis {axis} without 1=1 (fixbug0): Softmax::load_param "
                  f"rejects it ('param is too old'), so {out.dropped}; add 1=1")


def _check_reduction_fixbug(layer: CheckedLayer, out: FindingCollector) -> None:
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


def _check_reduction_old(layer: CheckedLayer, out: FindingCollector) -> None:
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
              "axes_flag[-1], undefined behaviour that marks no axis), while pnnx and "
              "ncnn >= 20220206 write them without "
              f"it (0=c 1=h 2=w); {mapping} ({origin}). Use 1=1 (reduce_all) or express the "
              "op with other layers")
