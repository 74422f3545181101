"""Read, edit and write NCNN text `.param` files: the one reader of this project.

`Param.scan` reads any text and records what ncnn's reader would trip on (as
`ReadProblem`s and per-param `TokenProblem`s, with line numbers) without
raising: the linter builds its findings from them. `Param.parse` / `Param.read`
raise an `InputError` at the first problem that keeps the file from being read
as a param at all. Layers are typed (`Layer`, `LayerParam`, `ParamValue`); an
unchanged `Param` writes back the exact text it was read from, an edited one is
written in the layout pnnx writes.

Limits modelled are those of ncnn's own reader (`Net::load_param`, `ParamDict`),
which every version shares: names scanned with %255s, values with %15s, 32
param ids, arrays written `-(23300 + id)=count,v1,...`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.errors import InputError

PARAM_MAGIC = "7767517"
MAX_PARAM_COUNT = 32  # NCNN_MAX_PARAM_COUNT
ARRAY_KEY_BASE = 23300  # array params are written -(23300 + id)=len,v1,...
TOKEN_MAX = 15  # ParamDict scans values with %15s / %15[^,\n ]
NAME_MAX = 255  # Net::load_param scans type/name/blob names with %255s
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_BLOB_COUNT = 1_000_000  # bottom/top counts beyond this are not taken for counts

# at most 20 digits: ncnn scans 32-bit ints, and int() refuses strings of over 4300 digits
_INT_RE = re.compile(r"[+-]?\d{1,20}")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_KV_RE = re.compile(r"(-?\d{1,20})=(.*)", re.DOTALL)
_TOKEN_RE = re.compile(r'(?:[^\s"]+|"[^"]*"?)+')  # whitespace-separated, "quoted parts" kept

ValueKind = Literal["int", "float", "string", "bad"]
ParamForm = Literal["scalar", "array", "list", "string"]  # list = newer 'k=a,b,c' syntax
Severity = Literal["error", "warning"]


def short(text: str, limit: int = 40) -> str:
    """`text` cut to `limit` characters for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tokens_of(line: str) -> list[str]:
    """The whitespace-separated tokens of a layer line; quoted parts keep their spaces."""
    return _TOKEN_RE.findall(line)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ParamValue:
    """One value as ParamDict reads it: an int, a float, a string, or unreadable ("bad")."""

    text: str
    kind: ValueKind
    number: int | float | None = None


def classify_value(text: str) -> ParamValue:
    """`text` typed as ParamDict types it (a '.' or 'e' makes it a float)."""
    if "." in text or "e" in text.lower():  # vstr_is_float
        if _FLOAT_RE.fullmatch(text):
            try:
                return ParamValue(text, "float", float(text))
            except (ValueError, OverflowError):
                pass
        return ParamValue(text, "bad")
    if _INT_RE.fullmatch(text):
        number = int(text)
        if INT32_MIN <= number <= INT32_MAX:
            return ParamValue(text, "int", number)
    return ParamValue(text, "bad")


def int_bits_as_float(value: int) -> float:
    return struct.unpack("<f", struct.pack("<i", value))[0]


def float_bits_as_int(value: float) -> int:
    try:
        return struct.unpack("<i", struct.pack("<f", value))[0]
    except OverflowError:
        infinity = float("inf") if value > 0 else float("-inf")
        return struct.unpack("<i", struct.pack("<f", infinity))[0]


@dataclass(frozen=True)
class TokenProblem:
    """Why ParamDict cannot take one `id=value` token.

    `then` says how a reader of a given ncnn completes the message: "" (complete),
    "drops_layer" (append what that ncnn does with a layer whose params fail),
    "id_range" (append what that ncnn does with an id of 32 or more).
    """

    message: str
    then: Literal["", "drops_layer", "id_range"] = ""


@dataclass(frozen=True)
class LayerParam:
    """One `id=value` token of a layer line."""

    key: int  # as written, e.g. -23310
    id: int  # param id, e.g. 10
    form: ParamForm
    values: tuple[ParamValue, ...]
    token: str
    problems: tuple[TokenProblem, ...] = ()

    @property
    def value_text(self) -> str:
        return self.token.partition("=")[2]

    @property
    def is_array(self) -> bool:
        return self.form in ("array", "list")

    @property
    def ok(self) -> bool:
        """False when ParamDict cannot read this token."""
        return not self.problems

    def number(self, default: float) -> int | float:
        """`pd.get(id, default)` as ncnn computes it (ints and floats share a union)."""
        if self.is_array or self.form == "string" or not self.values:
            return default
        number = self.values[0].number
        if number is None:
            return default
        if isinstance(default, float) and isinstance(number, int):
            return int_bits_as_float(number)
        if isinstance(default, int) and isinstance(number, float):
            return float_bits_as_int(number)
        return number


def parse_param_token(key_text: str, value_text: str, token: str) -> LayerParam:
    """The typed param of a token already split at its first '='."""
    key = int(key_text)
    is_array = key <= -ARRAY_KEY_BASE
    pid = -key - ARRAY_KEY_BASE if is_array else key
    if key < 0 and not is_array:
        return LayerParam(key, pid, "scalar", (), token, (TokenProblem(
            f"param key {key} is negative but not an array key (arrays are "
            f"-{ARRAY_KEY_BASE}-id): ParamDict indexes its table with it (out-of-bounds write "
            "in old ncnn; rejected by newer ncnn)"),))
    if pid >= MAX_PARAM_COUNT:
        return LayerParam(key, pid, "array" if is_array else "scalar", (), token, (TokenProblem(
            f"param id {pid} (key {key}) is outside 0..{MAX_PARAM_COUNT - 1} "
            "(NCNN_MAX_PARAM_COUNT)", "id_range"),))
    if is_array:
        return _array_param(key, pid, token, value_text)
    return _scalar_param(key, pid, token, value_text)


def _array_param(key: int, pid: int, token: str, value_text: str) -> LayerParam:
    parts = value_text.split(",")
    len_text, elements = parts[0], parts[1:]

    def failed(*problems: TokenProblem) -> LayerParam:
        return LayerParam(key, pid, "array", (), token, problems)

    if not _INT_RE.fullmatch(len_text) or int(len_text) < 0:
        return failed(TokenProblem(f"array {key}= must start with a non-negative element "
                                   f"count, got {short(len_text)!r}: ParamDict fails",
                                   "drops_layer"))
    count = int(len_text)
    if value_text.endswith(",") or any(e == "" for e in elements):
        return failed(TokenProblem(f"array {key}= has an empty element: ParamDict fails",
                                   "drops_layer"))
    if len(elements) < count:
        return failed(TokenProblem(f"array {key}= declares {count} elements but has "
                                   f"{len(elements)}: ParamDict fails reading element "
                                   f"{len(elements) + 1}", "drops_layer"))
    if len(elements) > count:
        return failed(TokenProblem(
            f"array {key}= declares {count} elements but has {len(elements)}: ParamDict stops "
            "after the declared elements and ncnn reads the leftover ',...' as the next layer, "
            "so the rest of the file misparses"))
    values: list[ParamValue] = []
    problems: list[TokenProblem] = []
    for i, text in enumerate(elements):
        if len(text) > TOKEN_MAX:
            problems.append(TokenProblem(
                f"array {key}= element {i} {short(text)!r} is {len(text)} characters; ncnn "
                f"scans at most {TOKEN_MAX} (%15[^,\\n ]) and misparses the rest of the line"))
            continue
        value = classify_value(text)
        if value.kind == "bad":
            problems.append(TokenProblem(f"array {key}= element {i} {text!r} is not an int or "
                                         "a float: ParamDict fails", "drops_layer"))
        values.append(value)
    return LayerParam(key, pid, "array", tuple(values) if not problems else (), token,
                      tuple(problems))


def _scalar_param(key: int, pid: int, token: str, value_text: str) -> LayerParam:
    if value_text.startswith('"') or value_text[:1].isalpha():
        return LayerParam(key, pid, "string", (ParamValue(value_text, "string"),), token)
    if "," in value_text:
        values = tuple(classify_value(element) for element in value_text.split(","))
        return LayerParam(key, pid, "list", values, token)
    if len(value_text) > TOKEN_MAX:
        return LayerParam(key, pid, "scalar", (), token, (TokenProblem(
            f"value of {pid}= {short(value_text)!r} is {len(value_text)} characters; ncnn scans "
            f"at most {TOKEN_MAX} (%15s) and misparses the rest of the line (write fewer "
            "digits, e.g. %e)"),))
    value = classify_value(value_text)
    if value.kind == "bad":
        return LayerParam(key, pid, "scalar", (), token, (TokenProblem(
            f"value of {pid}= {value_text!r} is not an int or a float: ParamDict fails",
            "drops_layer"),))
    return LayerParam(key, pid, "scalar", (value,), token)


def param_of_token(token: str) -> LayerParam | None:
    """The typed param of `token`; None when it is not `id=value` at all."""
    match = _KV_RE.fullmatch(token)
    if match is None:
        return None
    return parse_param_token(match.group(1), match.group(2), token)


# --------------------------------------------------------------------------- layers


@dataclass
class Layer:
    """One layer line: `type name n_bottoms n_tops bottoms... tops... id=value...`.

    `line` is its 1-based line in the file read (0 for a layer built in code).
    """

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: list[LayerParam] = field(default_factory=list)
    line: int = 0

    @classmethod
    def build(cls, layer_type: str, name: str, bottoms: list[str], tops: list[str],
              params: list[str] | None = None) -> Layer:
        """A layer from `id=value` strings (ValueError if one is not `id=value`)."""
        typed = []
        for token in params or []:
            param = param_of_token(token)
            if param is None:
                raise ValueError(f"{token!r} is not id=value")
            typed.append(param)
        return cls(layer_type, name, list(bottoms), list(tops), typed)

    def text(self) -> str:
        """The layer line as pnnx writes it (without the newline)."""
        head = f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}"
        return " ".join([head, *self.bottoms, *self.tops, *(p.token for p in self.params)])

    def get(self, key: int) -> str | None:
        """The value text of the first param written with `key` (e.g. 9 or -23310)."""
        for param in self.params:
            if param.key == key:
                return param.value_text
        return None

    def set(self, key: int, value: str) -> None:
        """Write `key=value` in place of the first param with that key, or append it."""
        param = param_of_token(f"{key}={value}")
        if param is None:
            raise ValueError(f"{key}={value!r} is not id=value")
        for i, old in enumerate(self.params):
            if old.key == key:
                self.params[i] = param
                return
        self.params.append(param)

    def state(self) -> tuple:
        """Everything written for this layer (to tell whether it was edited)."""
        return (self.type, self.name, tuple(self.bottoms), tuple(self.tops),
                tuple(p.token for p in self.params))


@dataclass(frozen=True)
class ReadProblem:
    """Something ncnn's reader trips on, at a 1-based `line` (0 = the whole file).

    `fatal` problems keep the file (or the layer line) from being read at all.
    """

    line: int
    message: str
    severity: Severity = "error"
    layer_type: str = ""
    layer_name: str = ""
    fatal: bool = True
    stray_token: bool = False  # about a token that is not id=value: ncnn stops reading the
    # layer's params there and takes it for the next layer's type


def _layer_problem(line: int, message: str, layer_type: str = "", layer_name: str = "",
                   severity: Severity = "error") -> ReadProblem:
    return ReadProblem(line, message, severity, layer_type, layer_name,
                       fatal=severity == "error")


def scan_layer_line(number: int, text: str) -> tuple[Layer | None, list[ReadProblem]]:
    """The layer on line `number`, or None, and the problems of the line itself."""
    tokens = tokens_of(text)
    if len(tokens) < 4:
        return None, [_layer_problem(number, "layer line needs '<Type> <name> <bottom_count> "
                                     f"<top_count> ...', got {short(text.strip())!r}")]
    layer_type, name, bottoms_text, tops_text = tokens[:4]
    for label, value in (("type", layer_type), ("name", name)):
        if len(value) > NAME_MAX:
            return None, [_layer_problem(number, f"layer {label} is {len(value)} characters; "
                                         f"ncnn scans at most {NAME_MAX} (%255s)",
                                         layer_type, name)]
    counts = []
    for label, value in (("bottom_count", bottoms_text), ("top_count", tops_text)):
        if not _INT_RE.fullmatch(value) or not 0 <= int(value) <= MAX_BLOB_COUNT:
            return None, [_layer_problem(number, f"{label} {short(value)!r} is not a "
                                         "non-negative integer", layer_type, name)]
        counts.append(int(value))
    n_bottoms, n_tops = counts
    blobs_end = 4 + n_bottoms + n_tops
    if len(tokens) < blobs_end:
        return None, [_layer_problem(number, f"declares {n_bottoms} bottom and {n_tops} top "
                                     f"blobs but only {len(tokens) - 4} names follow",
                                     layer_type, name)]
    names = tokens[4:blobs_end]
    problems = []
    for blob in names:
        if len(blob) > NAME_MAX:
            return None, [_layer_problem(number, f"blob name is {len(blob)} characters; ncnn "
                                         f"scans at most {NAME_MAX} (%255s)", layer_type, name)]
        if _KV_RE.fullmatch(blob):
            problems.append(_layer_problem(number, f"blob name {blob!r} looks like a param: are "
                                           "the bottom/top counts right?", layer_type, name,
                                           "warning"))
    layer = Layer(layer_type, name, names[:n_bottoms], names[n_bottoms:], line=number)
    for token in tokens[blobs_end:]:
        param = param_of_token(token)
        if param is None:
            problems.append(ReadProblem(
                number, f"token {short(token)!r} is not id=value: ParamDict stops here and ncnn "
                "reads it as the next layer's type, so the rest of the file misparses",
                "error", layer_type, name, stray_token=True))
            break
        layer.params.append(param)
    return layer, problems


# --------------------------------------------------------------------------- files


def _header_problems(lines: list[str]) -> tuple[list[ReadProblem], int | None, int | None]:
    """Problems of lines 1-2, and the declared layer and blob counts (None if unreadable)."""
    problems = []
    first = lines[0].strip() if lines else ""
    if first != PARAM_MAGIC:
        problems.append(ReadProblem(1, f"line 1 must be the magic {PARAM_MAGIC}, got "
                                    f"{short(first)!r}: Net::load_param fails ('param is too "
                                    "old')"))
    second = lines[1].split() if len(lines) > 1 else []
    if (len(second) == 2 and all(_INT_RE.fullmatch(t) for t in second)
            and all(int(t) > 0 for t in second)):
        return problems, int(second[0]), int(second[1])
    given = lines[1].strip() if len(lines) > 1 else ""
    problems.append(ReadProblem(2, "line 2 must be '<layer_count> <blob_count>' (two positive "
                                f"integers), got {short(given)!r}"))
    return problems, None, None


@dataclass
class Param:
    """A `.param` file: its layers, and what `scan` found wrong with it."""

    layers: list[Layer]
    source: str | None = None  # the text read; written back as is while nothing changed
    problems: list[ReadProblem] = field(default_factory=list)
    declared_layers: int | None = None
    declared_blobs: int | None = None
    layer_line_count: int = 0  # non-blank lines after the header
    _read_state: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def scan(cls, text: str) -> Param:
        """Everything readable in `text`, never raising; problems in `problems` (by line)."""
        lines = text.replace("\r", "").split("\n")
        problems, declared_layers, declared_blobs = _header_problems(lines)
        layers: list[Layer] = []
        count = 0
        for number, line in enumerate(lines[2:], start=3):
            if not line.strip():
                continue
            count += 1
            layer, line_problems = scan_layer_line(number, line)
            problems += line_problems
            if layer is not None:
                layers.append(layer)
        param = cls(layers, text, problems, declared_layers, declared_blobs, count)
        param._read_state = param._state()
        return param

    @classmethod
    def parse(cls, text: str, where: str | Path = "<param>") -> Param:
        """The layers of a text param; InputError naming `where` at its first fatal problem."""
        param = cls.scan(text)
        fatal = next((p for p in param.problems if p.fatal), None)
        if fatal is not None:
            raise InputError(where, fatal.message if fatal.message.startswith("line ")
                             else f"line {fatal.line}: {fatal.message}")
        miscount = param.layer_count_problem()
        if miscount is not None:
            raise InputError(where, miscount.message)
        return param

    @classmethod
    def read(cls, path: Path) -> Param:
        """The param file at `path`; InputError naming it when it is not a text param."""
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as exc:
            raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InputError(path, "not an NCNN text param (not UTF-8 text)") from None
        return cls.parse(text, path)

    def _state(self) -> tuple:
        return tuple(layer.state() for layer in self.layers)

    @property
    def edited(self) -> bool:
        return self.source is None or self._state() != self._read_state

    def layer_count_problem(self) -> ReadProblem | None:
        """Line 2's layer count against the layer lines, when they disagree."""
        declared, count = self.declared_layers, self.layer_line_count
        if declared is None or declared == count:
            return None
        why = ("Net::load_param runs out of file and fails" if declared > count
               else "the layers past that count are never read")
        return ReadProblem(2, f"line 2 declares {declared} layers but the file has {count} "
                           f"layer lines: {why}")

    def blob_count(self) -> int:
        return len({top for layer in self.layers for top in layer.tops})

    def blob_names(self) -> set[str]:
        """Every blob name a layer reads or writes."""
        return {blob for layer in self.layers for blob in (*layer.bottoms, *layer.tops)}

    def text(self) -> str:
        """The text read if nothing was edited; otherwise the layout pnnx writes."""
        if not self.edited:
            return self.source
        body = "\n".join(layer.text() for layer in self.layers)
        return f"{PARAM_MAGIC}\n{len(self.layers)} {self.blob_count()}\n{body}\n"

    def write(self, path: Path) -> None:
        Path(path).write_bytes(self.text().encode("utf-8"))

    def rename_blob(self, old: str, new: str) -> None:
        for layer in self.layers:
            layer.bottoms = [new if b == old else b for b in layer.bottoms]
            layer.tops = [new if t == old else t for t in layer.tops]
            if layer.type == "Input" and layer.name == old:
                layer.name = new

    def unbake_cell_counts(self, cell_counts: set[int]) -> int:
        """Let Reshapes infer the cell count instead of holding the export size's.

        pnnx resolves `reshape(..., -1)` to numbers; in the graphs this tool
        exports, cells are always the innermost (w) axis, so a Reshape whose w is
        one of the levels' cell counts gets w = -1 back. Returns how many changed.
        """
        changed = 0
        for layer in self.layers:
            if layer.type != "Reshape" or "-1" in (layer.get(1), layer.get(2)):
                continue
            w = layer.get(0)
            if w is not None and w.lstrip("-").isdigit() and int(w) in cell_counts:
                layer.set(0, "-1")
                changed += 1
        return changed
