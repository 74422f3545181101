"""Lint an NCNN ``.param`` (and its ``.bin``) against the ncnn the M5Stack UnitV2 links.

The UnitV2 firmware links an ncnn library built from master around commit 6afc736
(2021-02-22) with the hand-written headers of release 20201208, and it ignores load
errors: anything that ncnn cannot load crashes the whole recognition process on the
device.  What each ncnn version accepts is an ``NcnnTables`` object
(``parity.ncnn_tables``, data in ``parity/data/``); every rule asks the tables of
the target it lints for instead of knowing versions itself.

Targets (``parity.targets``; each names the tables its ncnn is linted against):

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

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from common.cli import OneLineCommand, one_line_errors
from convert.lint_bin_layout import check_bin_layout
from convert.lint_findings import CheckedLayer, Finding, FindingCollector, dropped_layer
from convert.lint_table_rules import (
    ACTIVATION_NAMES,
    ACTIVATION_PARAMS_ID,
    SHAPE_HINT_ID,
    check_against_tables,
    written_as,
)
from parity.ncnn_param import (
    ARRAY_KEY_BASE,
    MAX_PARAM_COUNT,
    PARAM_MAGIC,
    TOKEN_MAX,
    Layer,
    LayerParam,
    Param,
    ReadProblem,
    float_bits_as_int,
    int_bits_as_float,
    short,
)
from parity.ncnn_tables import NcnnTables
from parity.targets import TARGETS

STRING_MAX = 255  # newer ncnn: string params, 15 + 240 characters

ACTIVATION_PARAMS_NEEDED = {2: 1, 3: 2}  # LeakyReLU slope; Clip min,max

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


def target_tables(target: str) -> tuple[NcnnTables, ...]:
    """The tables of registered target ``target`` (ValueError if unknown)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    return tuple(TARGETS[target].tables)


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


# --------------------------------------------------------------------------- reading


@dataclass
class _Parsed:
    param: Param
    layers: list[CheckedLayer]


def _read(text: str, tables: Sequence[NcnnTables], out: FindingCollector) -> _Parsed:
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


def _checked_layer(layer: Layer, tables: Sequence[NcnnTables],
                   out: FindingCollector) -> CheckedLayer:
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
              out: FindingCollector) -> bool:
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
                     out: FindingCollector) -> bool:
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
                   out: FindingCollector) -> bool:
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


def _check_graph(parsed: _Parsed, out: FindingCollector) -> None:
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


# --------------------------------------------------------------------------- generic rules


def _check_generic(layer: CheckedLayer, tables: Sequence[NcnnTables],
                   out: FindingCollector) -> None:
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
                          f"{written_as(number, kind)}")
                break


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
        out = FindingCollector(path, table.name if len(tables) > 1 else None,
                         dropped_layer([table]))
        for layer in layers:
            check_against_tables(layer, table, out)
        per_table.append(out.items)
    return _merge_tables(per_table, path) if len(tables) > 1 else per_table[0]


def _read_text(param_path: Path, out: FindingCollector) -> str | None:
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
    out = FindingCollector(str(param_path))
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
            check_bin_layout(layers, data, tables, target, out)
    return out.items


def lint_param(param_path: Path, bin_path: Path | None = None, target: str = "unitv2",
               tables: Sequence[NcnnTables] | None = None) -> list[Finding]:
    """Lint ``param_path`` (and its ``.bin``) for ``target``; findings sorted by line.

    ``tables`` (the ncnn versions to check against) default to those of ``target``
    (``parity.targets``); given, ``target`` only names them in messages.
    ``bin_path`` defaults to the ``.bin`` next to the ``.param`` (same stem); if that
    does not exist the ``.bin`` checks are skipped with a warning.
    """
    if tables is None:
        tables = target_tables(target)
    elif not tables:
        raise ValueError("lint_param needs at least one table")
    param_path = Path(param_path)
    path = str(param_path)
    out = FindingCollector(path, dropped=dropped_layer(tables))
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
@click.option("--target", type=click.Choice(list(TARGETS)), default="unitv2",
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
