"""Lint an NCNN ``.param`` (and its ``.bin``) against the ncnn the M5Stack UnitV2 links.

The UnitV2 firmware links an ncnn library built from master around commit 6afc736
(2021-02-22) with the hand-written headers of release 20201208, and it ignores load
errors: anything that ncnn cannot load crashes the whole recognition process on the
device.  The compatibility tables ``convert/data/ncnn-20210222.json`` and
``convert/data/ncnn-20201208.json`` describe what those two ncnn versions accept;
``/work/shared/ncnn-compat/README.md`` explains the rules.

Targets:

``unitv2``
    Everything: file format, blob graph, ``.bin`` layout, and the old-version rules
    (layer table membership, param ids, enum ranges, 3-D-only blobs, Reduction axes)
    checked against *both* tables.  A finding from either table is an error.
``ncnn-latest``
    File format, blob graph, ``.bin`` layout and the ``load_param`` failures that
    current ncnn still has; the old-version rules are skipped.

Behaviour modelled here comes from the ncnn source of that era (``src/net.cpp``,
``src/paramdict.cpp``, ``src/modelbin.cpp``, ``src/layer/*.cpp`` at 6afc736 and
tag 20201208; current master for ``ncnn-latest``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.resources
import json
import math
import re
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]
Target = Literal["unitv2", "ncnn-latest"]

UNITV2_TABLES = ("ncnn-20210222", "ncnn-20201208")
"""Tables the ``unitv2`` target lints against (most likely library first)."""

MAGIC = 7767517
MAX_PARAM_COUNT = 32  # NCNN_MAX_PARAM_COUNT
ARRAY_KEY_BASE = 23300  # array params are written -(23300 + id)=len,v1,...
SHAPE_HINT_ID = 30  # net-level top shape hints, -23330=..., read by Net::load_param
TOKEN_MAX = 15  # ParamDict scans values with %15s / %15[^,\n ]
NAME_MAX = 255  # Net::load_param scans type/name/blob names with %255s
STRING_MAX = 255  # newer ncnn: string params, 15 + 240 characters
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# ModelBin::load(w, type=0) tags (first 4 bytes, little endian)
TAG_FP16 = 0x01306B47  # fp16 data, padded to 4 bytes
TAG_INT8 = 0x000D4B38  # int8 data, padded to 4 bytes
TAG_FP32_RAW = 0x0002C056  # fp32 data ("raw data with extra scaling")
QUANT_TABLE_BYTES = 256 * 4  # any other non-zero tag: 256-float table + uint8 indices

ACTIVATION_LAYERS_MAX = {
    "Convolution": 5,
    "ConvolutionDepthWise": 5,
    "InnerProduct": 5,
    "Deconvolution": 4,
    "DeconvolutionDepthWise": 4,
}
ACTIVATION_NAMES = {0: "none", 1: "ReLU", 2: "LeakyReLU", 3: "Clip", 4: "Sigmoid", 5: "Mish"}
ACTIVATION_PARAMS_NEEDED = {2: 1, 3: 2}  # LeakyReLU slope; Clip min,max
ACTIVATION_PARAMS_ID = {"Convolution": 10, "ConvolutionDepthWise": 10, "InnerProduct": 10,
                        "Deconvolution": 10, "DeconvolutionDepthWise": 10}

PERMUTE_3D_ORDERS = "0=WHC 1=HWC 2=WCH 3=CWH 4=HCW 5=CHW"

# Array params whose elements the layer reads through a typed pointer.  ParamDict
# stores each element as int or float according to its own token (no conversion), so
# an int token read through a float pointer (or the reverse) is reinterpreted bits.
ARRAY_ELEMENT_TYPES: dict[tuple[str, int], str] = {
    **{(t, 10): "float" for t in ACTIVATION_LAYERS_MAX},
    ("Reduction", 3): "int",
    ("Crop", 9): "int",
    ("Crop", 10): "int",
    ("Crop", 11): "int",
    ("Slice", 0): "int",
    ("Squeeze", 3): "int",
    ("ExpandDims", 3): "int",
    ("Eltwise", 1): "float",
}

# Layer types of current ncnn master (src/CMakeLists.txt ncnn_add_layer list).  ArgMax
# and SPP are still added OFF there (null creator); Tile is on.
LATEST_LAYER_TYPES = frozenset([
    "AbsVal", "ArgMax", "BatchNorm", "Bias", "BNLL", "Concat", "Convolution", "Crop",
    "Deconvolution", "Dropout", "Eltwise", "ELU", "Embed", "Exp", "Flatten", "InnerProduct",
    "Input", "Log", "LRN", "MemoryData", "MVN", "Pooling", "Power", "PReLU", "Proposal",
    "Reduction", "ReLU", "Reshape", "ROIPooling", "Scale", "Sigmoid", "Slice", "Softmax",
    "Split", "SPP", "TanH", "Threshold", "Tile", "RNN", "LSTM", "BinaryOp", "UnaryOp",
    "ConvolutionDepthWise", "Padding", "Squeeze", "ExpandDims", "Normalize", "Permute",
    "PriorBox", "DetectionOutput", "Interp", "DeconvolutionDepthWise", "ShuffleChannel",
    "InstanceNorm", "Clip", "Reorg", "YoloDetectionOutput", "Quantize", "Dequantize",
    "Yolov3DetectionOutput", "PSROIPooling", "ROIAlign", "Packing", "Requantize", "Cast",
    "HardSigmoid", "SELU", "HardSwish", "Noop", "PixelShuffle", "DeepCopy", "Mish",
    "StatisticsPooling", "Swish", "Gemm", "GroupNorm", "LayerNorm", "Softplus", "GRU",
    "MultiHeadAttention", "GELU", "Convolution1D", "Pooling1D", "ConvolutionDepthWise1D",
    "Convolution3D", "ConvolutionDepthWise3D", "Pooling3D", "MatMul", "Deconvolution1D",
    "DeconvolutionDepthWise1D", "Deconvolution3D", "DeconvolutionDepthWise3D", "Einsum",
    "DeformableConv2D", "GLU", "Fold", "Unfold", "GridSample", "CumulativeSum", "CopyTo", "Erf",
    "Diag", "CELU", "Shrink", "RMSNorm", "Spectrogram", "InverseSpectrogram", "Flip", "SDPA",
    "RotaryEmbed",
])
LATEST_NULL_LAYERS = frozenset({"ArgMax", "SPP"})

# Layer types that read the .bin in current ncnn but whose newer layout is not modelled
# here (for ncnn-latest; for unitv2 they are not loadable anyway, or their old layout
# is modelled below).
LATEST_UNMODELLED_WEIGHT_READERS = frozenset([
    "Convolution1D", "ConvolutionDepthWise1D", "Convolution3D", "ConvolutionDepthWise3D",
    "Deconvolution1D", "DeconvolutionDepthWise1D", "Deconvolution3D",
    "DeconvolutionDepthWise3D", "DeformableConv2D", "Gemm", "MultiHeadAttention", "Quantize",
    "RMSNorm", "RNN", "LSTM", "GRU", "Dequantize", "Requantize",
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


# --------------------------------------------------------------------------- tables


@functools.cache
def _read_table(name: str) -> dict:
    resource = importlib.resources.files("convert").joinpath("data", f"{name}.json")
    return json.loads(resource.read_text(encoding="utf-8"))


def load_table(name: str) -> dict:
    """The compatibility table ``convert/data/<name>.json`` (a fresh copy)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"bad table name {name!r}")
    return copy.deepcopy(_read_table(name))


# --------------------------------------------------------------------------- parsing

# at most 20 digits: ncnn scans 32-bit ints, and int() refuses strings of over 4300 digits
_INT_RE = re.compile(r"[+-]?\d{1,20}")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_KV_RE = re.compile(r"(-?\d{1,20})=(.*)", re.DOTALL)
_TOKEN_RE = re.compile(r'(?:[^\s"]+|"[^"]*"?)+')


@dataclass
class Value:
    text: str
    kind: Literal["int", "float", "string", "bad"]
    number: int | float | None = None


@dataclass
class Param:
    key: int  # as written, e.g. -23310
    id: int  # param id, e.g. 10
    form: Literal["scalar", "array", "list", "string"]  # list = newer 'k=a,b,c' syntax
    values: list[Value]
    token: str

    @property
    def is_array(self) -> bool:
        return self.form in ("array", "list")


@dataclass
class Layer:
    line: int
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, Param] = field(default_factory=dict)
    params_ok: bool = True  # False when ParamDict::load_param would fail on this line

    def scalar(self, pid: int, default: float) -> float:
        """``pd.get(pid, default)`` as ncnn computes it (ints and floats share a union)."""
        p = self.params.get(pid)
        if p is None:
            return default
        if p.is_array or p.form == "string" or not p.values or p.values[0].number is None:
            return default
        number = p.values[0].number
        if isinstance(default, float) and isinstance(number, int):
            return _bits_int_to_float(number)
        if isinstance(default, int) and isinstance(number, float):
            return _bits_float_to_int(number)
        return number

    def array(self, pid: int) -> list[Value] | None:
        p = self.params.get(pid)
        if p is None or not p.is_array:
            return None
        return p.values


def _bits_int_to_float(v: int) -> float:
    return struct.unpack("<f", struct.pack("<i", v))[0]


def _bits_float_to_int(v: float) -> int:
    try:
        return struct.unpack("<i", struct.pack("<f", v))[0]
    except OverflowError:
        return struct.unpack("<i", struct.pack("<f", float("inf") if v > 0 else float("-inf")))[0]


def _classify(text: str, allow_string: bool = False) -> Value:
    if allow_string and text and (text[0].isalpha() or text[0] == '"'):
        return Value(text, "string")
    if "." in text or "e" in text.lower():  # vstr_is_float
        if _FLOAT_RE.fullmatch(text):
            try:
                return Value(text, "float", float(text))
            except (ValueError, OverflowError):
                pass
        return Value(text, "bad")
    if _INT_RE.fullmatch(text):
        number = int(text)
        if INT32_MIN <= number <= INT32_MAX:
            return Value(text, "int", number)
    return Value(text, "bad")


class _Collector:
    """Gathers findings for one target / table."""

    def __init__(self, path: str, table: str | None = None, latest: bool = False):
        self.path = path
        self.table = table
        self.latest = latest
        self.items: list[Finding] = []

    @property
    def dropped(self) -> str:
        """What happens when a layer's params or load_param fail."""
        return DROPPED_LATEST if self.latest else DROPPED

    def add(self, severity: Severity, line: int, layer: Layer | None, message: str,
            *, layer_type: str = "", layer_name: str = "") -> None:
        if layer is not None:
            layer_type, layer_name = layer.type, layer.name
        self.items.append(Finding(severity, line, layer_type, layer_name, message, self.table,
                                  self.path))

    def error(self, line: int, layer: Layer | None, message: str, **kw: str) -> None:
        self.add("error", line, layer, message, **kw)

    def warning(self, line: int, layer: Layer | None, message: str, **kw: str) -> None:
        self.add("warning", line, layer, message, **kw)


def _parse_params(layer: Layer, tokens: Sequence[str], target: Target, out: _Collector) -> None:
    latest = target == "ncnn-latest"
    line = layer.line
    for token in tokens:
        m = _KV_RE.fullmatch(token)
        if not m:
            out.error(line, layer, f"token {_short(token)!r} is not id=value: ParamDict stops "
                      "here and ncnn reads it as the next layer's type, so the rest of the file "
                      "misparses")
            layer.params_ok = False
            return
        key_text, value_text = m.group(1), m.group(2)
        key = int(key_text)
        is_array = key <= -ARRAY_KEY_BASE
        pid = -key - ARRAY_KEY_BASE if is_array else key
        if key < 0 and not is_array:
            out.error(line, layer, f"param key {key} is negative but not an array key "
                      f"(arrays are -{ARRAY_KEY_BASE}-id): ParamDict indexes its table with "
                      "it (out-of-bounds write in old ncnn; rejected by newer ncnn)")
            layer.params_ok = False
            continue
        if pid >= MAX_PARAM_COUNT:
            if latest:
                why = "ParamDict rejects it, so " + DROPPED_LATEST
            else:
                why = ("ncnn 20210222's ParamDict rejects it (" + DROPPED + "); ncnn 20201208 "
                       "has no bound check and writes past its 32-entry table (memory "
                       "corruption)")
            out.error(line, layer, f"param id {pid} (key {key}) is outside 0..{MAX_PARAM_COUNT - 1} "
                      f"(NCNN_MAX_PARAM_COUNT): {why}")
            layer.params_ok = False
            continue
        if is_array:
            param = _parse_array(layer, key, pid, token, value_text, out)
        else:
            param = _parse_scalar(layer, key, pid, token, value_text, latest, out)
        if param is None:
            layer.params_ok = False
            continue
        if pid in layer.params:
            out.warning(line, layer, f"param id {pid} is given twice ({layer.params[pid].token!r} "
                        f"and {token!r}); ncnn keeps the last one")
        layer.params[pid] = param


def _parse_array(layer: Layer, key: int, pid: int, token: str, value_text: str,
                 out: _Collector) -> Param | None:
    line = layer.line
    parts = value_text.split(",")
    len_text, elements = parts[0], parts[1:]
    if not _INT_RE.fullmatch(len_text) or int(len_text) < 0:
        out.error(line, layer, f"array {key}= must start with a non-negative element count, got "
                  f"{_short(len_text)!r}: ParamDict fails, so {out.dropped}")
        return None
    count = int(len_text)
    if value_text.endswith(",") or any(e == "" for e in elements):
        out.error(line, layer, f"array {key}= has an empty element: ParamDict fails, so "
                  f"{out.dropped}")
        return None
    if len(elements) != count:
        if len(elements) < count:
            why = f"ParamDict fails reading element {len(elements) + 1}, so {out.dropped}"
        else:
            why = ("ParamDict stops after the declared elements and ncnn reads the leftover "
                   "',...' as the next layer, so the rest of the file misparses")
        out.error(line, layer, f"array {key}= declares {count} elements but has {len(elements)}: "
                  f"{why}")
        return None
    values: list[Value] = []
    ok = True
    for i, text in enumerate(elements):
        if len(text) > TOKEN_MAX:
            out.error(line, layer, f"array {key}= element {i} {_short(text)!r} is {len(text)} "
                      f"characters; ncnn scans at most {TOKEN_MAX} (%15[^,\\n ]) and misparses the "
                      "rest of the line")
            ok = False
            continue
        value = _classify(text)
        if value.kind == "bad":
            out.error(line, layer, f"array {key}= element {i} {text!r} is not an int or a float: "
                      f"ParamDict fails, so {out.dropped}")
            ok = False
        values.append(value)
    if not ok:
        return None
    return Param(key, pid, "array", values, token)


def _parse_scalar(layer: Layer, key: int, pid: int, token: str, value_text: str, latest: bool,
                  out: _Collector) -> Param | None:
    line = layer.line
    if value_text.startswith('"') or (value_text[:1].isalpha()):
        if latest:
            if len(value_text) > STRING_MAX:
                out.error(line, layer, f"string param {pid} is longer than {STRING_MAX} "
                          "characters: ParamDict fails")
                return None
            return Param(key, pid, "string", [Value(value_text, "string")], token)
        out.error(line, layer, f"param {pid}={_short(value_text)!r} is a string; this ncnn has "
                  f"only int/float params: ParamDict fails, so {out.dropped}")
        return None
    if "," in value_text:
        if latest:
            elements = value_text.split(",")
            values = [_classify(e) for e in elements]
            bad = [e for e, v in zip(elements, values) if v.kind == "bad" or len(e) > TOKEN_MAX]
            if bad:
                out.error(line, layer, f"list param {pid}= has invalid element {_short(bad[0])!r} "
                          f"(int/float of at most {TOKEN_MAX} characters)")
                return None
            return Param(key, pid, "list", values, token)
        out.error(line, layer, f"param {pid}={_short(value_text)!r} uses the newer 'id=a,b,c' "
                  f"array syntax; this ncnn needs -{ARRAY_KEY_BASE + pid}=len,a,b,c and reads "
                  "this as one scalar, misparsing the line")
        return None
    if len(value_text) > TOKEN_MAX:
        out.error(line, layer, f"value of {pid}= {_short(value_text)!r} is {len(value_text)} "
                  f"characters; ncnn scans at most {TOKEN_MAX} (%15s) and misparses the rest of "
                  "the line (write fewer digits, e.g. %e)")
        return None
    value = _classify(value_text)
    if value.kind == "bad":
        out.error(line, layer, f"value of {pid}= {value_text!r} is not an int or a float: "
                  f"ParamDict fails, so {out.dropped}")
        return None
    return Param(key, pid, "scalar", [value], token)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_layer(line_no: int, text: str, target: Target, out: _Collector) -> Layer | None:
    tokens = _TOKEN_RE.findall(text)
    if len(tokens) < 4:
        out.error(line_no, None, f"layer line needs '<Type> <name> <bottom_count> <top_count> "
                  f"...', got {_short(text.strip())!r}")
        return None
    ltype, name, nb_text, nt_text = tokens[:4]
    probe = Layer(line_no, ltype, name, [], [])
    for label, value in (("type", ltype), ("name", name)):
        if len(value) > NAME_MAX:
            out.error(line_no, probe, f"layer {label} is {len(value)} characters; ncnn scans at "
                      f"most {NAME_MAX} (%255s)")
            return None
    counts = []
    for label, value in (("bottom_count", nb_text), ("top_count", nt_text)):
        if not _INT_RE.fullmatch(value) or int(value) < 0 or int(value) > 1_000_000:
            out.error(line_no, probe, f"{label} {_short(value)!r} is not a non-negative integer")
            return None
        counts.append(int(value))
    nb, nt = counts
    if len(tokens) < 4 + nb + nt:
        out.error(line_no, probe, f"declares {nb} bottom and {nt} top blobs but only "
                  f"{len(tokens) - 4} names follow")
        return None
    names = tokens[4: 4 + nb + nt]
    for blob in names:
        if len(blob) > NAME_MAX:
            out.error(line_no, probe, f"blob name is {len(blob)} characters; ncnn scans at most "
                      f"{NAME_MAX} (%255s)")
            return None
        if _KV_RE.fullmatch(blob):
            out.warning(line_no, probe, f"blob name {blob!r} looks like a param: are the "
                        "bottom/top counts right?")
    layer = Layer(line_no, ltype, name, names[:nb], names[nb:])
    _parse_params(layer, tokens[4 + nb + nt:], target, out)
    return layer


@dataclass
class _Parsed:
    layers: list[Layer]
    header_ok: bool
    declared_layers: int | None
    declared_blobs: int | None
    layer_line_count: int


def _parse_file(text: str, target: Target, out: _Collector) -> _Parsed:
    lines = text.split("\n")
    first = lines[0].strip() if lines else ""
    header_ok = True
    if first != str(MAGIC):
        out.error(1, None, f"line 1 must be the magic {MAGIC}, got {_short(first)!r}: "
                  "Net::load_param fails ('param is too old')")
        header_ok = False
    declared_layers = declared_blobs = None
    second = lines[1].split() if len(lines) > 1 else []
    if (len(second) == 2 and all(_INT_RE.fullmatch(t) for t in second)
            and all(int(t) > 0 for t in second)):
        declared_layers, declared_blobs = int(second[0]), int(second[1])
    else:
        out.error(2, None, "line 2 must be '<layer_count> <blob_count>' (two positive integers), "
                  f"got {_short(lines[1].strip() if len(lines) > 1 else '')!r}")
        header_ok = False
    layers: list[Layer] = []
    count = 0
    for index, raw in enumerate(lines[2:], start=3):
        if not raw.strip():
            continue
        count += 1
        layer = _parse_layer(index, raw, target, out)
        if layer is not None:
            layers.append(layer)
    return _Parsed(layers, header_ok, declared_layers, declared_blobs, count)


# --------------------------------------------------------------------------- graph


def _check_graph(parsed: _Parsed, out: _Collector) -> None:
    if parsed.declared_layers is not None and parsed.declared_layers != parsed.layer_line_count:
        if parsed.declared_layers > parsed.layer_line_count:
            why = "Net::load_param runs out of file and fails"
        else:
            why = "the layers past that count are never read"
        out.error(2, None, f"line 2 declares {parsed.declared_layers} layers but the file has "
                  f"{parsed.layer_line_count} layer lines: {why}")
    produced: dict[str, int] = {}
    later: dict[str, int] = {}
    for layer in parsed.layers:
        for top in layer.tops:
            later.setdefault(top, layer.line)
    slots = 0
    undefined: set[str] = set()
    consumers: dict[str, list[Layer]] = {}
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
    if parsed.declared_blobs is not None and parsed.declared_blobs != slots:
        if parsed.declared_blobs < slots:
            why = "Net::load_param writes past its blob array (memory corruption / crash)"
        else:
            why = "the count must match the file"
        out.error(2, None, f"line 2 declares {parsed.declared_blobs} blobs but the layers produce "
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


def _check_against_table(layer: Layer, table: dict, out: _Collector) -> None:
    """Old-version rules of one table for one layer (unitv2 target)."""
    entry = table["layers"].get(layer.type)
    if entry is None:
        extra = ""
        if layer.type in FOUR_D_TYPES:
            extra = " (a 3-D op on 4-D blobs; this ncnn's Mat has at most w, h, c)"
        out.error(layer.line, layer, f"layer type {layer.type!r} is not registered in this "
                  f"ncnn{extra}: Net::load_param fails, and in this era its error path "
                  f"(Net::clear) segfaults; {CRASH}")
        return
    if not entry.get("enabled", True):
        out.error(layer.line, layer, f"layer type {layer.type!r} is registered with a null "
                  f"creator (ncnn_add_layer({layer.type} OFF)): Net::load_param fails and "
                  f"segfaults; {CRASH}")
        return
    params: dict[str, str] = entry.get("params", {})
    defaults: dict[str, str] = entry.get("defaults", {})
    array_ids = set(entry.get("array_ids", []))
    for pid, param in sorted(layer.params.items()):
        if pid == SHAPE_HINT_ID:
            continue
        if str(pid) not in params:
            out.error(layer.line, layer, _unknown_id_message(layer, pid, param, params))
            continue
        name = params[str(pid)]
        kind = _param_kind(defaults.get(str(pid), "0"))
        if pid in array_ids:
            kind = "array"
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
    _check_enums(layer, table, out)


def _as_kind(number: float, kind: str) -> str:
    if kind == "float":
        return f"{float(number):e}"
    if not math.isfinite(number):
        return "a finite integer"
    return str(int(number))


def _unknown_id_message(layer: Layer, pid: int, param: Param, params: dict[str, str]) -> str:
    known = ", ".join(f"{k}={v}" for k, v in sorted(params.items(), key=lambda kv: int(kv[0])))
    if pid == 11 and layer.type in ("Reshape", "Input", "MemoryData"):
        what = ("11=d (depth) is a 4-D shape param; this ncnn's Mat has at most 3 dims (w, h, c), "
                "so it is silently ignored and the shape is wrong")
    else:
        what = (f"param id {pid} ({_short(param.token)}) is not read by {layer.type}::load_param "
                "here: "
                "ncnn silently ignores it, so a newer converter's setting has no effect")
    return f"{what} (known ids: {known or 'none'})"


def _check_enums(layer: Layer, table: dict, out: _Collector) -> None:
    t = layer.type
    notes = table.get("global_notes", {})
    line = layer.line
    if t in ACTIVATION_LAYERS_MAX:
        act = layer.scalar(9, 0)
        limit = ACTIVATION_LAYERS_MAX[t]
        if not 0 <= act <= limit:
            names = ", ".join(f"{k}={v}" for k, v in ACTIVATION_NAMES.items() if k <= limit)
            out.error(line, layer, f"9=activation_type {act} is outside 0..{limit} ({names}): "
                      "this ncnn silently applies no activation (no fused HardSwish etc.); emit "
                      "a separate activation layer")
    elif t == "BinaryOp":
        op = layer.scalar(0, 0)
        limit = int(notes.get("binaryop_op_type_max", 8))
        if not 0 <= op <= limit:
            out.error(line, layer, f"0=op_type {op} is outside 0..{limit} (ADD SUB MUL DIV MAX "
                      "MIN POW RSUB RDIV): this ncnn computes nothing for it (no RPOW/ATAN2)")
    elif t == "UnaryOp":
        op = layer.scalar(0, 0)
        limit = int(notes.get("unaryop_op_type_max", 16))
        if not 0 <= op <= limit:
            out.error(line, layer, f"0=op_type {op} is outside 0..{limit}: this ncnn computes "
                      "nothing for it (no LOG10/ROUND/TRUNC)")
    elif t == "Interp":
        _check_interp(layer, out, latest=False)
    elif t == "Permute":
        order = layer.scalar(0, 0)
        if not 0 <= order <= 5:
            four_d = " (a 4-D order of newer ncnn)" if 6 <= order <= 23 else ""
            out.error(line, layer, f"0=order_type {order}{four_d} is outside 0..5 "
                      f"({PERMUTE_3D_ORDERS}): load_param accepts it but forward has no branch "
                      "for it and leaves the output blob empty")
    elif t == "Softmax":
        _check_softmax(layer, out)
    elif t == "Reduction":
        _check_reduction_old(layer, out)
    elif t == "Reorg":
        if layer.scalar(0, int(table["layers"][t].get("defaults", {}).get("0", "1"))) == 0:
            out.error(line, layer, "0=stride is 0 (20201208's default when 0= is absent): "
                      "forward divides by it; always write 0=stride")
    else:
        entry = table["layers"].get(t, {})
        if entry.get("load_param_can_fail"):
            out.warning(line, layer, f"{t}::load_param can reject its params and this linter "
                        "has no rule for it; check it by hand")


def _check_interp(layer: Layer, out: _Collector, latest: bool) -> None:
    rt = layer.scalar(0, 0)
    if not 0 <= rt <= 3:
        out.error(layer.line, layer, f"0=resize_type {rt} is outside 0..3: Interp::load_param "
                  f"rejects it, so {out.dropped}")
    elif rt == 0:
        given = "0=0" if 0 in layer.params else "no 0= (default 0)"
        msg = (f"resize_type is {given}: load_param accepts it but forward implements only "
               "1=nearest 2=bilinear 3=bicubic, so nothing is resized")
        if latest:
            out.warning(layer.line, layer, msg)
        else:
            out.error(layer.line, layer, msg)


def _check_softmax(layer: Layer, out: _Collector) -> None:
    axis = layer.scalar(0, 0)
    fixbug0 = layer.scalar(1, 0)
    if axis != 0 and fixbug0 == 0:
        out.error(layer.line, layer, f"0=axis {axis} without 1=1 (fixbug0): Softmax::load_param "
                  f"rejects it ('param is too old'), so {out.dropped}; add 1=1")


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


def _check_reduction_old(layer: Layer, out: _Collector) -> None:
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


def _check_generic(layer: Layer, target: Target, out: _Collector) -> None:
    """Rules that hold for every ncnn (both targets)."""
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
        elif target == "unitv2":
            for j in range(len(layer.tops)):
                dims = hint.values[4 * j].number
                if isinstance(dims, int) and dims > 3:
                    out.warning(line, layer, f"shape hint for top {j} has dims={dims}; this "
                                "ncnn has at most 3 dims (the hint is ignored)")
    # fused activation params
    if layer.type in ACTIVATION_LAYERS_MAX:
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
            seen = _bits_int_to_float(number) if kind == "float" else _bits_float_to_int(number)
            if seen != number:
                out.error(line, layer, f"array {param.key}= element {i} {value.text!r} is "
                          f"written as {value.kind} but read as {kind}: ParamDict stores each "
                          f"element as written, so the layer sees {seen!r}; write "
                          f"{_as_kind(number, kind)}")
                break


def _check_latest(layer: Layer, out: _Collector) -> None:
    """load_param failures that current ncnn still has (ncnn-latest target)."""
    if layer.type in LATEST_NULL_LAYERS:
        out.error(layer.line, layer, f"layer type {layer.type!r} is still registered with a null "
                  "creator in current ncnn: Net::load_param fails")
    elif layer.type not in LATEST_LAYER_TYPES:
        out.warning(layer.line, layer, f"layer type {layer.type!r} is not a built-in layer of "
                    "current ncnn: loading needs a registered custom layer")
    if layer.type == "Softmax":
        _check_softmax(layer, out)
    elif layer.type == "Interp":
        _check_interp(layer, out, latest=True)
    elif layer.type == "Reduction":
        axes = layer.array(3)
        if axes and layer.scalar(5, 0) == 0:
            out.error(layer.line, layer, "Reduction with -23303 axes but without 5=1: current "
                      "ncnn's load_param rejects old-style (batch-axis) axes ('param is too old')")


# --------------------------------------------------------------------------- .bin layout

# A read is (what, element_count, type): type 0 = tagged weight blob, 1 = raw fp32.
Read = tuple[str, int, int]
ReadModel = Callable[[Layer, bool], list[Read]]


def _conv_reads(layer: Layer, latest: bool) -> list[Read]:
    if latest and layer.scalar(19, 0):  # dynamic_weight: weights come from a blob
        return []
    num_output = layer.scalar(0, 0)
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", num_output, 1))
    int8 = layer.scalar(8, 0)
    if int8:
        reads += [("weight_data_int8_scales", num_output, 1), ("bottom_blob_int8_scale", 1, 1)]
        if latest and int8 > 100:
            reads.append(("top_blob_int8_scale", 1, 1))
    return reads


def _convdw_reads(layer: Layer, latest: bool) -> list[Read]:
    if latest and layer.scalar(19, 0):
        return []
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    int8 = layer.scalar(8, 0)
    if int8 in ((1, 101) if latest else (1,)):
        reads += [("weight_data_int8_scales", layer.scalar(7, 1), 1),
                  ("bottom_blob_int8_scales", 1, 1)]
    elif int8 in ((2, 102) if latest else (2,)):
        reads += [("weight_data_int8_scales", 1, 1), ("bottom_blob_int8_scales", 1, 1)]
    if latest and int8 > 100:
        reads.append(("top_blob_int8_scales", 1, 1))
    return reads


def _deconv_reads(layer: Layer, latest: bool) -> list[Read]:
    if latest and layer.scalar(28, 0):
        return []
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    return reads


def _innerproduct_reads(layer: Layer, latest: bool) -> list[Read]:
    num_output = layer.scalar(0, 0)
    reads: list[Read] = [("weight_data", layer.scalar(2, 0), 0)]
    if layer.scalar(1, 0):
        reads.append(("bias_data", num_output, 1))
    if layer.scalar(8, 0):
        reads += [("weight_data_int8_scales", num_output, 1), ("bottom_blob_int8_scale", 1, 1)]
    return reads


def _batchnorm_reads(layer: Layer, latest: bool) -> list[Read]:
    c = layer.scalar(0, 0)
    return [(name, c, 1) for name in ("slope_data", "mean_data", "var_data", "bias_data")]


def _scale_reads(layer: Layer, latest: bool) -> list[Read]:
    size = layer.scalar(0, 0)
    if size == -233:  # scale comes from a second blob
        return []
    reads: list[Read] = [("scale_data", size, 1)]
    if layer.scalar(1, 0):
        reads.append(("bias_data", size, 1))
    return reads


def _memorydata_reads(layer: Layer, latest: bool) -> list[Read]:
    w, h, c = layer.scalar(0, 0), layer.scalar(1, 0), layer.scalar(2, 0)
    d = layer.scalar(11, 0) if latest else 0
    load_type = layer.scalar(21, 1) if latest else 1
    if d:
        return [("data", w * h * d * c, load_type)]
    if c:
        return [("data", w * h * c, load_type)]
    if h:
        return [("data", w * h, load_type)]
    if w:
        return [("data", w, load_type)]
    return []


def _embed_reads(layer: Layer, latest: bool) -> list[Read]:
    reads: list[Read] = [("weight_data", layer.scalar(3, 0), 0)]
    if layer.scalar(2, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    if latest and layer.scalar(18, 0):
        reads.append(("weight_data_int8_scale", 1, 1))
    return reads


def _layernorm_reads(layer: Layer, latest: bool) -> list[Read]:
    if latest and not layer.scalar(2, 1):
        return []
    c = layer.scalar(0, 0)
    return [("gamma_data", c, 1), ("beta_data", c, 1)]


def _affine_norm_reads(channels_id: int, affine_id: int) -> ReadModel:
    def reads(layer: Layer, latest: bool) -> list[Read]:
        if not layer.scalar(affine_id, 1):
            return []
        c = layer.scalar(channels_id, 0)
        return [("gamma_data", c, 1), ("beta_data", c, 1)]
    return reads


def _single_raw(what: str, size_id: int, flag_id: int | None = None) -> ReadModel:
    def reads(layer: Layer, latest: bool) -> list[Read]:
        if flag_id is not None and not layer.scalar(flag_id, 0):
            return []
        return [(what, layer.scalar(size_id, 0), 1)]
    return reads


def _recurrent_reads(gates: int, bias_rows: int) -> ReadModel:
    def reads(layer: Layer, latest: bool) -> list[Read]:
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


def _walk_bin(layers: list[Layer], data: bytes, target: Target, reads_weights: set[str],
              out: _Collector) -> None:
    latest = target == "ncnn-latest"
    size = len(data)
    offset = 0
    last_reader: Layer | None = None
    for layer in layers:
        model = WEIGHT_MODELS.get(layer.type)
        unmodelled = (latest and layer.type in LATEST_UNMODELLED_WEIGHT_READERS) or (
            model is None and (layer.type in reads_weights
                               or layer.type in LATEST_UNMODELLED_WEIGHT_READERS))
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
            reads = model(layer, latest)
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


def lint_param(param_path: Path, bin_path: Path | None = None,
               target: Target = "unitv2") -> list[Finding]:
    """Lint ``param_path`` (and its ``.bin``) for ``target``; findings sorted by line.

    ``bin_path`` defaults to the ``.bin`` next to the ``.param`` (same stem); if that
    does not exist the ``.bin`` checks are skipped with a warning.
    """
    if target not in ("unitv2", "ncnn-latest"):
        raise ValueError(f"unknown target {target!r}")
    param_path = Path(param_path)
    path = str(param_path)
    out = _Collector(path, latest=target == "ncnn-latest")
    try:
        raw = param_path.read_bytes()
    except OSError as exc:
        out.error(0, None, f"cannot read the .param: {exc}")
        return out.items
    if not raw.strip():
        out.error(0, None, "the .param is empty")
        return out.items
    if raw.startswith(struct.pack("<i", MAGIC)):
        out.error(0, None, "this is a binary .param.bin (ncnn2mem output), not a text .param")
        return out.items
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8", errors="replace")
        line = raw[: exc.start].count(b"\n") + 1
        out.error(line, None, "the .param is not UTF-8 text (binary or corrupted?)")
    if "\0" in text:
        out.error(text[: text.index("\0")].count("\n") + 1, None, "the .param contains NUL bytes")
        return _sorted(out.items)
    text = text.replace("\r", "")

    parsed = _parse_file(text, target, out)
    _check_graph(parsed, out)
    for layer in parsed.layers:
        _check_generic(layer, target, out)

    findings = list(out.items)
    reads_weights: set[str] = set()
    if target == "unitv2":
        per_table = []
        for name in UNITV2_TABLES:
            table = _read_table(name)
            reads_weights |= {t for t, e in table["layers"].items() if e.get("reads_weights")}
            tout = _Collector(path, name)
            for layer in parsed.layers:
                _check_against_table(layer, table, tout)
            per_table.append(tout.items)
        findings += _merge_tables(per_table, path)
    else:
        lout = _Collector(path, latest=True)
        for layer in parsed.layers:
            _check_latest(layer, lout)
        findings += lout.items

    bout = _Collector(path)
    if bin_path is None:
        candidate = param_path.with_suffix(".bin")
        if candidate.is_file():
            bin_path = candidate
        else:
            bout.warning(0, None, f"no .bin given and {candidate.name} does not exist: .bin "
                         "layout not checked")
    if bin_path is not None:
        try:
            data = Path(bin_path).read_bytes()
        except OSError as exc:
            bout.error(0, None, f"cannot read the .bin {bin_path}: {exc}")
        else:
            _walk_bin(parsed.layers, data, target, reads_weights, bout)
    findings += bout.items
    return _sorted(findings)


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.line, f.severity != "error"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("param", type=Path)
    parser.add_argument("--bin", type=Path, default=None)
    parser.add_argument("--target", choices=("unitv2", "ncnn-latest"), default="unitv2")
    args = parser.parse_args(argv)
    findings = lint_param(args.param, args.bin, args.target)
    for f in findings:
        print(f"{f.severity.upper()}: {f}")
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
