"""convert.ncnn_lint: real reference models lint clean, each rule fails on a crafted param."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from convert.ncnn_lint import Finding, lint_param, main
from parity.ncnn_tables import TABLE_FILES, ncnn_tables
from parity.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "fixtures" / "reference-ncnn"
BOTH = ",".join(TARGETS["unitv2"].ncnn_tables)

# A tiny valid net: Input 16x16x3 -> 3x3 conv (8 outputs, bias, ReLU) -> Sigmoid.
CONV_LINE = "Convolution conv0 1 1 data c0 0=8 1=3 4=1 5=1 6=216 9=1"
BASE = [
    "Input data 0 1 data 0=16 1=16 2=3",
    CONV_LINE,
    "Sigmoid sig 1 1 c0 out",
]
BASE_BIN = struct.pack("<I", 0) + bytes(4 * 216) + bytes(4 * 8)  # fp32 tag, weights, bias


def write_param(tmp_path: Path, lines: list[str], *, header: str | None = None,
                bin_bytes: bytes | None = BASE_BIN, name: str = "m") -> Path:
    """Write <name>.param (header counted from the lines unless given) and <name>.bin."""
    if header is None:
        tops = 0
        for line in lines:
            tokens = line.split()
            tops += int(tokens[3])
        header = f"{len(lines)} {tops}"
    param = tmp_path / f"{name}.param"
    param.write_text("7767517\n" + header + "\n" + "\n".join(lines) + "\n")
    if bin_bytes is not None:
        (tmp_path / f"{name}.bin").write_bytes(bin_bytes)
    return param


def replace(line_prefix: str, new_line: str) -> list[str]:
    """BASE with the line starting with ``line_prefix`` replaced."""
    out = [new_line if line.startswith(line_prefix) else line for line in BASE]
    assert out != BASE
    return out


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def the_error(findings: list[Finding], *, layer_type: str | None = None, contains: str = "",
              line: int | None = None) -> Finding:
    """The single error matching the filters (fails with all findings listed otherwise)."""
    hits = [f for f in errors(findings)
            if (layer_type is None or f.layer_type == layer_type)
            and contains.lower() in f.message.lower()
            and (line is None or f.line == line)]
    assert len(hits) == 1, "\n".join(map(str, findings))
    return hits[0]


# --------------------------------------------------------------------------- reference models


@pytest.mark.parametrize("stem", ["nanodet_m", "nanodet-plus-m_416"])
@pytest.mark.parametrize("target", ["unitv2", "ncnn-latest"])
def test_reference_models_lint_clean(stem: str, target: str) -> None:
    findings = lint_param(REFERENCE / f"{stem}.param", REFERENCE / f"{stem}.bin", target=target)
    # not even warnings: the .bin is consumed exactly, every id is known
    assert findings == [], "\n".join(map(str, findings))


def test_bin_defaults_to_sibling(tmp_path: Path) -> None:
    assert lint_param(REFERENCE / "nanodet_m.param") == []
    param = write_param(tmp_path, BASE, bin_bytes=None)
    findings = lint_param(param)
    assert not errors(findings)
    assert any("not checked" in f.message for f in findings)


def test_crafted_base_is_clean(tmp_path: Path) -> None:
    param = write_param(tmp_path, BASE)
    assert lint_param(param) == []
    assert lint_param(param, target="ncnn-latest") == []


def test_tables_by_name() -> None:
    for name in TARGETS["unitv2"].ncnn_tables:
        tables = ncnn_tables(name)
        assert tables.name == name
        assert tables.layer("Convolution").reads_weights is True
        assert tables.layer("ArgMax").enabled is False
        assert tables.layer("Convolution").params[9] == "activation_type"
        assert not tables.supports("string_params")
    latest = ncnn_tables("ncnn-latest")
    assert latest.supports("string_params") and latest.layer("Einsum").enabled
    assert ncnn_tables("ncnn-20201208").layer("Einsum") is None
    with pytest.raises(TypeError):  # read-only: a rule cannot change the tables it reads
        ncnn_tables("ncnn-20210222").layers["Convolution"] = None
    with pytest.raises(KeyError, match="ncnn-99"):
        ncnn_tables("ncnn-99")
    with pytest.raises(KeyError, match="unknown ncnn capability"):
        latest.supports("time_travel")


def test_a_new_ncnn_version_is_one_data_file_and_one_registry_line(tmp_path, monkeypatch):
    data = json.loads((ROOT / "parity" / "data" / "ncnn-20210222.json").read_text())
    data["version"] = "20220101"
    data["layers"]["Erf"] = {"enabled": True, "params": {}}
    data["capabilities"].append("four_d_blobs")
    path = tmp_path / "ncnn-20220101.json"
    path.write_text(json.dumps(data))
    monkeypatch.setitem(TABLE_FILES, "ncnn-20220101", path)
    newer = ncnn_tables("ncnn-20220101")
    assert newer.version == "20220101" and newer.supports("four_d_blobs")
    for line, layer_type in (("Erf e 1 1 c0 out", "Erf"), ("Permute p 1 1 c0 out 0=12", "Permute")):
        param = write_param(tmp_path, replace("Sigmoid", line))
        the_error(lint_param(param), layer_type=layer_type)  # the UnitV2's ncnn: an error
        assert lint_param(param, tables=[newer]) == []


def test_finding_str() -> None:
    f = Finding("error", 7, "Softmax", "prob", "bad axis", "ncnn-20201208", "x/m.param")
    assert str(f) == "x/m.param:7: Softmax prob: bad axis [ncnn-20201208]"
    f = Finding("warning", 2, "", "", "counts", None, "m.param")
    assert str(f) == "m.param:2: counts"


# --------------------------------------------------------------------------- rule 1: format, graph


def test_bad_magic(tmp_path: Path) -> None:
    param = tmp_path / "m.param"
    param.write_text("7767518\n1 1\nInput data 0 1 data\n")
    the_error(lint_param(param), contains="magic", line=1)


def test_wrong_layer_count(tmp_path: Path) -> None:
    param = write_param(tmp_path, BASE, header="4 3")
    the_error(lint_param(param), contains="declares 4 layers", line=2)
    param = write_param(tmp_path, BASE, header="2 3")
    the_error(lint_param(param), contains="declares 2 layers", line=2)


def test_wrong_blob_count(tmp_path: Path) -> None:
    param = write_param(tmp_path, BASE, header="3 2")
    f = the_error(lint_param(param), contains="declares 2 blobs", line=2)
    assert "past its blob array" in f.message
    param = write_param(tmp_path, BASE, header="3 5")
    the_error(lint_param(param), contains="declares 5 blobs", line=2)
    # the same checks hold for ncnn-latest
    the_error(lint_param(param, target="ncnn-latest"), contains="declares 5 blobs")


def test_unique_blob_names_counted(tmp_path: Path) -> None:
    lines = ["Input data 0 1 data 0=8 1=8 2=3", "Split sp 1 2 data a b",
             "BinaryOp add 2 1 a b out 0=0"]
    assert lint_param(write_param(tmp_path, lines, bin_bytes=b"")) == []


def test_undefined_bottom_blob(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Sigmoid", "Sigmoid sig 1 1 nowhere out"))
    f = the_error(lint_param(param), layer_type="Sigmoid", contains="'nowhere'", line=5)
    assert f.layer_name == "sig"
    # also for ncnn-latest
    the_error(lint_param(param, target="ncnn-latest"), contains="'nowhere'")


def test_bottom_produced_later(tmp_path: Path) -> None:
    lines = [BASE[0], "Sigmoid sig 1 1 c0 out", CONV_LINE]
    f = the_error(lint_param(write_param(tmp_path, lines)), layer_type="Sigmoid",
                  contains="only later")
    assert "line 5" in f.message


def test_duplicate_top_blob(tmp_path: Path) -> None:
    lines = [*BASE, "Sigmoid sig2 1 1 c0 out"]
    the_error(lint_param(write_param(tmp_path, lines)), contains="already produced", line=6)


@pytest.mark.parametrize("line", [
    "Convolution",  # too few tokens
    "Sigmoid sig x 1 c0 out",  # count not an int
    "Sigmoid sig 1 3 c0 out",  # fewer names than declared
    "Sigmoid sig 1 1 c0 out 0",  # token without '='
    "Sigmoid sig 1 1 c0 out =5",
    "Sigmoid sig 1 1 c0 out 0=",
    "Sigmoid sig 1 1 c0 out 0=abc",
    "Sigmoid sig 1 1 c0 out -5=1",  # negative non-array key
    "Sigmoid sig 1 1 c0 out 0=99999999999",  # int32 overflow
    "Sigmoid sig 1 1 c0 out -23300=x,1",
    "Sigmoid sig 1 1 c0 out -23300=3,1,2",  # fewer elements than declared
    "Sigmoid sig 1 1 c0 out -23300=1,1,2",  # more elements than declared
    "Sigmoid sig 1 1 c0 out -23300=2,1,,",
    "Sigmoid sig 1 1 c0 out -23300=1,1.5.5",
    "Sigmoid sig 1 1 c0 out 0=1,2,3",  # newer list syntax
    'Sigmoid sig 1 1 c0 out 0="str"',  # string value
])
def test_malformed_layer_line(tmp_path: Path, line: str) -> None:
    param = write_param(tmp_path, replace("Sigmoid", line), header="3 3")
    found = errors(lint_param(param))
    assert any(f.line == 5 for f in found), "\n".join(map(str, found))


@pytest.mark.parametrize("content", [
    b"",
    b"\n\n",
    b"\x00\x01\x02garbage\xff\xfe",
    struct.pack("<i", 7767517) + bytes(40),  # a binary .param.bin
    b"7767517\n",
    b"7767517\nfoo bar\n",
    b"7767517\n1 1\n",
    b"7767517\n1 1\nInput data 0 1 data\xff\xfe 0=1\n",
    "7767517\n1 1\nInput d\u00e4ta 0 1 d\u00e4ta\n".encode("latin-1"),
    b"7767517\n-1 0\n",
    b"7767517\n2 2\nInput data 0 1 data\nInput data 0 99999999999999 data\n",
])
def test_garbage_does_not_crash(tmp_path: Path, content: bytes) -> None:
    param = tmp_path / "g.param"
    param.write_bytes(content)
    for target in ("unitv2", "ncnn-latest"):
        findings = lint_param(param, bin_path=None, target=target)
        assert errors(findings), content
        for f in findings:  # each a one-line message that names the file and its line
            text = str(f)
            assert text.startswith(f"{param}:{f.line}: ") and "\n" not in text, text
            assert 0 <= f.line <= content.count(b"\n") + 1 and f.message.strip(), text


def test_missing_param_file(tmp_path: Path) -> None:
    the_error(lint_param(tmp_path / "absent.param"), contains="cannot read")


# --------------------------------------------------------------------------- rule 2: layer types


def test_unknown_layer_type(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Sigmoid", "FancyOp sig 1 1 c0 out"))
    f = the_error(lint_param(param), layer_type="FancyOp", contains="not registered")
    assert f.table == BOTH
    assert "segfault" in f.message


@pytest.mark.parametrize("layer", ["ArgMax", "Tile", "SPP"])
def test_null_registered_layers(tmp_path: Path, layer: str) -> None:
    param = write_param(tmp_path, replace("Sigmoid", f"{layer} x 1 1 c0 out"))
    f = the_error(lint_param(param), layer_type=layer, contains="null creator")
    assert f.table == BOTH


def test_layer_only_in_newer_table(tmp_path: Path) -> None:
    # GRU exists in 6afc736 but is registered null in 20201208
    lines = ["Input data 0 1 data 0=4 1=10",
             "GRU gru 1 1 data out 0=2 1=24 2=0"]
    nbytes = 4 + 4 * 24 + 4 + 4 * 2 * 4 + 4 + 4 * 2 * 2 * 3
    f = the_error(lint_param(write_param(tmp_path, lines, bin_bytes=bytes(nbytes))),
                  layer_type="GRU")
    assert f.table == "ncnn-20201208"


def test_reorg_default_stride_differs(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Sigmoid", "Reorg r 1 1 c0 out"))
    f = the_error(lint_param(param), layer_type="Reorg", contains="stride")
    assert f.table == "ncnn-20201208"
    assert lint_param(write_param(tmp_path, replace("Sigmoid", "Reorg r 1 1 c0 out 0=2"))) == []


def test_four_d_layer_type(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Sigmoid", "Pooling3D p 1 1 c0 out 0=0"))
    f = the_error(lint_param(param), layer_type="Pooling3D")
    assert "4-D" in f.message


# --------------------------------------------------------------------------- rule 3: params


def test_param_id_32_or_more(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Sigmoid", "Sigmoid sig 1 1 c0 out 40=1"))
    f = the_error(lint_param(param), layer_type="Sigmoid", contains="param id 40")
    assert "20201208" in f.message and "20210222" in f.message
    # still an error for current ncnn, whose ParamDict rejects it too
    the_error(lint_param(param, target="ncnn-latest"), contains="param id 40")
    param = write_param(tmp_path, replace("Sigmoid", "Sigmoid sig 1 1 c0 out -23340=1,1"))
    the_error(lint_param(param), layer_type="Sigmoid", contains="param id 40")


def test_unknown_param_id(tmp_path: Path) -> None:
    # ids 7/8 are Convolution ids ncnn of this era does not read (7 is ConvolutionDepthWise's)
    param = write_param(tmp_path, replace("Convolution", CONV_LINE + " 7=2"))
    f = the_error(lint_param(param), layer_type="Convolution", contains="param id 7")
    assert f.table == BOTH
    assert "silently ignores" in f.message
    assert f.layer_name == "conv0" and f.line == 4
    # the newer ncnn target does not know the old-version id lists
    assert errors(lint_param(param, target="ncnn-latest")) == []


def test_unknown_param_id_ncnn_latest_accepts(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Sigmoid", "Sigmoid sig 1 1 c0 out 5=1"))
    the_error(lint_param(param), layer_type="Sigmoid", contains="param id 5")
    assert lint_param(param, target="ncnn-latest") == []


def test_param_only_in_newer_table(tmp_path: Path) -> None:
    # adaptive pooling (7=1 8=out_w) exists only in 6afc736
    param = write_param(tmp_path, replace("Sigmoid", "Pooling pool 1 1 c0 out 0=1 7=1 8=1"))
    found = [f for f in errors(lint_param(param)) if f.layer_type == "Pooling"]
    assert {f.table for f in found} == {"ncnn-20201208"}
    assert {f.message.split(" (")[0] for f in found} == {"param id 7", "param id 8"}


def test_shape_hint_id_30_accepted(tmp_path: Path) -> None:
    line = "Sigmoid sig 1 1 c0 out -23330=4,3,16,16,8"
    assert lint_param(write_param(tmp_path, replace("Sigmoid", line))) == []
    line = "Sigmoid sig 1 1 c0 out -23330=2,3,16"
    the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
              contains="shape hints")


def test_token_longer_than_15(tmp_path: Path) -> None:
    line = "Interp up 1 1 c0 out 0=2 1=2.0000000000000000 2=2.0"
    f = the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
                  layer_type="Interp", contains="at most 15")
    assert "18 characters" in f.message
    line = "Slice sl 1 2 c0 o1 o2 -23300=2,4,-233000000000000000"
    the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
              layer_type="Slice", contains="at most 15")
    # exactly 15 is fine
    line = "Interp up 1 1 c0 out 0=2 1=2.0000000000000 2=2.0"
    assert errors(lint_param(write_param(tmp_path, replace("Sigmoid", line)))) == []


def test_array_length_mismatch(tmp_path: Path) -> None:
    line = "Slice sl 1 2 c0 o1 o2 -23300=3,4,-233"
    the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
              layer_type="Slice", contains="declares 3 elements but has 2")


def test_int_written_for_float_param(tmp_path: Path) -> None:
    # Clip reads 0=min 1=max as floats; ParamDict does not convert an int token
    param = write_param(tmp_path, replace("Sigmoid", "Clip clip 1 1 c0 out 0=0 1=6"))
    f = the_error(lint_param(param), layer_type="Clip", contains="param 1 (max)")
    assert "6.000000e+00" in f.message
    param = write_param(tmp_path, replace("Sigmoid", "Clip clip 1 1 c0 out 0=0.0 1=6.0"))
    assert lint_param(param) == []
    # activation params are read through a float pointer
    line = "Convolution conv0 1 1 data c0 0=8 1=3 4=1 5=1 6=216 9=3 -23310=2,0,6"
    the_error(lint_param(write_param(tmp_path, replace("Convolution", line))),
              layer_type="Convolution", contains="element 1 '6'")


def test_array_param_written_as_scalar(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Sigmoid", "Slice sl 1 2 c0 o1 o2 0=4"))
    the_error(lint_param(param), layer_type="Slice", contains="is an array")


# --------------------------------------------------------------------------- rule 4: enums


@pytest.mark.parametrize("layer_type,act,ok", [
    ("Convolution", 5, True), ("Convolution", 6, False), ("Convolution", -1, False),
    ("ConvolutionDepthWise", 6, False), ("Deconvolution", 4, True), ("Deconvolution", 5, False),
    ("DeconvolutionDepthWise", 5, False),
])
def test_activation_type(tmp_path: Path, layer_type: str, act: int, ok: bool) -> None:
    line = f"{layer_type} conv0 1 1 data c0 0=8 1=3 4=1 5=1 6=216 9={act}"
    if layer_type.endswith("DepthWise"):
        line = f"{layer_type} conv0 1 1 data c0 0=3 1=3 4=1 5=1 6=27 7=3 9={act}"
        bin_bytes = struct.pack("<I", 0) + bytes(4 * 27) + bytes(4 * 3)
    else:
        bin_bytes = BASE_BIN
    findings = lint_param(write_param(tmp_path, replace("Convolution", line),
                                      bin_bytes=bin_bytes))
    if ok:
        assert findings == [], "\n".join(map(str, findings))
    else:
        f = the_error(findings, layer_type=layer_type, contains="activation_type")
        assert f.table == BOTH
        assert errors(lint_param(write_param(tmp_path, replace("Convolution", line),
                                             bin_bytes=bin_bytes), target="ncnn-latest")) == []


def test_activation_params_missing(tmp_path: Path) -> None:
    line = "Convolution conv0 1 1 data c0 0=8 1=3 4=1 5=1 6=216 9=3 -23310=1,0.0"
    the_error(lint_param(write_param(tmp_path, replace("Convolution", line))),
              layer_type="Convolution", contains="needs 2 value(s)")


@pytest.mark.parametrize("layer,ok", [
    ("BinaryOp op 2 1 c0 c1 out 0=8", True),
    ("BinaryOp op 2 1 c0 c1 out 0=9", False),
    ("UnaryOp op 1 1 c0 out 0=16", True),
    ("UnaryOp op 1 1 c0 out 0=17", False),
    ("Permute p 1 1 c0 out 0=5", True),
    ("Permute p 1 1 c0 out 0=10", False),
    ("Interp up 1 1 c0 out 0=3 1=2.0 2=2.0", True),
    ("Interp up 1 1 c0 out 0=7 1=2.0 2=2.0", False),
    ("Interp up 1 1 c0 out 1=2.0 2=2.0", False),
    ("Softmax sm 1 1 c0 out 0=1 1=1", True),
    ("Softmax sm 1 1 c0 out 0=1", False),
    ("Softmax sm 1 1 c0 out", True),
])
def test_enum_rules(tmp_path: Path, layer: str, ok: bool) -> None:
    lines = [BASE[0], CONV_LINE]
    if layer.split()[2] == "2":
        lines.append("Split sp 1 2 c0 c0a c0b")
        layer = layer.replace("c0 c1", "c0a c0b")
    lines.append(layer)
    findings = lint_param(write_param(tmp_path, lines))
    if ok:
        assert findings == [], "\n".join(map(str, findings))
    else:
        f = the_error(findings, layer_type=layer.split()[0])
        assert f.table == BOTH


def test_interp_resize_type_7(tmp_path: Path) -> None:
    line = "Interp up 1 1 c0 out 0=7 1=2.0 2=2.0"
    f = the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
                  layer_type="Interp", contains="resize_type 7")
    assert "drops this layer" in f.message
    # current ncnn's Interp::load_param rejects it as well
    the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line)), target="ncnn-latest"),
              layer_type="Interp")


def test_softmax_axis_without_fixbug(tmp_path: Path) -> None:
    line = "Softmax sm 1 1 c0 out 0=1"
    f = the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
                  layer_type="Softmax", contains="1=1")
    assert f.table == BOTH


def test_permute_4d_order(tmp_path: Path) -> None:
    line = "Permute p 1 1 c0 out 0=12"
    f = the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
                  layer_type="Permute")
    assert "4-D" in f.message
    assert errors(lint_param(write_param(tmp_path, replace("Sigmoid", line)),
                             target="ncnn-latest")) == []


def test_reduction_explicit_axes(tmp_path: Path) -> None:
    # what pnnx writes for torch.amax(x, dim=1, keepdim=True) after a conv
    line = "Reduction amax 1 1 c0 out 0=4 1=0 -23303=1,0 4=1 5=1"
    findings = lint_param(write_param(tmp_path, replace("Sigmoid", line)))
    f = the_error(findings, layer_type="Reduction", contains="explicit axes")
    assert f.table == BOTH
    assert "batch axis" in f.message and "axes_flag[-1]" in f.message
    assert "left empty" in f.message
    # 5=1 is itself unknown to this ncnn
    the_error(findings, layer_type="Reduction", contains="param id 5")
    # pnnx-style axis 1 (h) is read as channels here
    line = "Reduction amax 1 1 c0 out 0=4 1=0 -23303=1,1 4=1"
    f = the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
                  layer_type="Reduction", contains="explicit axes")
    assert "means [h]" in f.message and "reduces [c]" in f.message
    # reduce_all is fine
    line = "Reduction rsum 1 1 c0 out 0=0 1=1"
    assert lint_param(write_param(tmp_path, replace("Sigmoid", line))) == []


def test_reduction_ncnn_latest_needs_fixbug(tmp_path: Path) -> None:
    line = "Reduction amax 1 1 c0 out 0=4 1=0 -23303=1,0 4=1 5=1"
    assert lint_param(write_param(tmp_path, replace("Sigmoid", line)), target="ncnn-latest") == []
    line = "Reduction amax 1 1 c0 out 0=4 1=0 -23303=1,1 4=1"
    the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line)), target="ncnn-latest"),
              layer_type="Reduction", contains="5=1")


# --------------------------------------------------------------------------- rule 5: 3-D only


@pytest.mark.parametrize("line", [
    "Reshape r 1 1 c0 out 0=4 1=4 11=2 2=8",
    "Reshape r 1 1 c0 out 0=-1 11=1",
])
def test_reshape_depth_param(tmp_path: Path, line: str) -> None:
    f = the_error(lint_param(write_param(tmp_path, replace("Sigmoid", line))),
                  layer_type="Reshape", contains="11=d")
    assert "4-D" in f.message
    assert f.table == BOTH


def test_input_depth_param(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Input", "Input data 0 1 data 0=16 1=16 11=4 2=3"))
    the_error(lint_param(param), layer_type="Input", contains="11=d")


def test_reshape_3d_is_fine(tmp_path: Path) -> None:
    line = "Reshape r 1 1 c0 out 0=16 1=16 2=8"
    assert lint_param(write_param(tmp_path, replace("Sigmoid", line))) == []


# --------------------------------------------------------------------------- rule 6: .bin


def _weighted_layers(param: Path) -> list[tuple[int, str, dict[str, str]]]:
    """(line, name, params) of the conv layers of a reference param, in order."""
    out = []
    for number, line in enumerate(param.read_text().splitlines(), start=1):
        tokens = line.split()
        if number > 2 and tokens[0] in ("Convolution", "ConvolutionDepthWise"):
            nb, nt = int(tokens[2]), int(tokens[3])
            kv = dict(t.split("=", 1) for t in tokens[4 + nb + nt:])
            out.append((number, tokens[1], kv))
        elif number > 2:
            assert tokens[0] not in ("InnerProduct", "BatchNorm", "Scale", "Deconvolution")
    return out


def _fp16_conv_bytes(kv: dict[str, str]) -> int:
    weights = int(kv["6"])
    bias = int(kv["0"]) if kv.get("5", "0") != "0" else 0
    return 4 + (weights * 2 + 3) // 4 * 4 + 4 * bias


def _truncated(tmp_path: Path, stem: str, cut: int) -> tuple[Path, Path]:
    param = tmp_path / f"{stem}.param"
    shutil.copyfile(REFERENCE / f"{stem}.param", param)
    data = (REFERENCE / f"{stem}.bin").read_bytes()
    assert data[:4] == struct.pack("<I", 0x01306B47)  # fp16 weights
    bin_path = tmp_path / f"{stem}.bin"
    bin_path.write_bytes(data[: len(data) - cut])
    return param, bin_path


@pytest.mark.parametrize("stem", ["nanodet_m", "nanodet-plus-m_416"])
def test_bin_one_float_short(tmp_path: Path, stem: str) -> None:
    param, bin_path = _truncated(tmp_path, stem, 4)
    last_line, last_name, kv = _weighted_layers(param)[-1]
    assert kv["5"] == "1"  # the last thing in the .bin is that conv's fp32 bias
    bias_bytes = 4 * int(kv["0"])
    for target in ("unitv2", "ncnn-latest"):
        f = the_error(lint_param(param, bin_path, target=target), contains="too short")
        assert (f.line, f.layer_name) == (last_line, last_name)
        assert f.layer_type == "Convolution"
        assert "bias_data" in f.message
        assert f"needs {bias_bytes} bytes" in f.message
        assert f"only {bias_bytes - 4} remain" in f.message
        assert f.table is None


@pytest.mark.parametrize("stem", ["nanodet_m", "nanodet-plus-m_416"])
def test_bin_short_by_whole_layers(tmp_path: Path, stem: str) -> None:
    convs = _weighted_layers(REFERENCE / f"{stem}.param")
    # a whole conv missing: the last conv has nothing left, not even its tag
    cut = _fp16_conv_bytes(convs[-1][2])
    param, bin_path = _truncated(tmp_path, stem, cut)
    f = the_error(lint_param(param, bin_path), contains="too short")
    assert (f.line, f.layer_name) == convs[-1][:2]
    assert "tag" in f.message and "only 0 remain" in f.message
    # the last three convs and one float of the one before: that one runs out first
    cut = sum(_fp16_conv_bytes(kv) for _, _, kv in convs[-3:]) + 4
    param, bin_path = _truncated(tmp_path, stem, cut)
    f = the_error(lint_param(param, bin_path), contains="too short")
    assert (f.line, f.layer_name) == convs[-4][:2]


def test_bin_too_long_is_a_warning(tmp_path: Path) -> None:
    param = tmp_path / "nanodet_m.param"
    shutil.copyfile(REFERENCE / "nanodet_m.param", param)
    bin_path = tmp_path / "nanodet_m.bin"
    bin_path.write_bytes((REFERENCE / "nanodet_m.bin").read_bytes() + bytes(12))
    findings = lint_param(param, bin_path)
    assert errors(findings) == []
    [warning] = findings
    assert "12 bytes more" in warning.message
    assert warning.layer_name == _weighted_layers(param)[-1][1]


def test_crafted_bin_short_and_tags(tmp_path: Path) -> None:
    param = write_param(tmp_path, BASE, bin_bytes=BASE_BIN[:-4])
    f = the_error(lint_param(param), layer_type="Convolution", contains="too short")
    assert f.layer_name == "conv0"
    # fp16 weights: 216 halves = 432 bytes, already 4-aligned
    fp16 = struct.pack("<I", 0x01306B47) + bytes(432) + bytes(32)
    assert lint_param(write_param(tmp_path, BASE, bin_bytes=fp16)) == []
    # int8 weights: 216 bytes
    int8 = struct.pack("<I", 0x000D4B38) + bytes(216) + bytes(32)
    assert lint_param(write_param(tmp_path, BASE, bin_bytes=int8)) == []
    # an odd fp16 count is padded to 4 bytes
    line = "Convolution conv0 1 1 data c0 0=1 1=3 5=0 6=27"
    param = write_param(tmp_path, replace("Convolution", line),
                        bin_bytes=struct.pack("<I", 0x01306B47) + bytes(54))
    the_error(lint_param(param), layer_type="Convolution", contains="needs 56 bytes")
    # any other tag is read as table-quantized data, with a warning
    odd = struct.pack("<I", 0x12345678) + bytes(1024 + 216) + bytes(32)
    findings = lint_param(write_param(tmp_path, BASE, bin_bytes=odd))
    assert errors(findings) == []
    assert any("0x12345678" in f.message for f in findings)


def test_bin_weight_models(tmp_path: Path) -> None:
    lines = [
        "Input data 0 1 data 0=4 1=4 2=3",
        "BatchNorm bn 1 1 data b0 0=3 1=1.0e-05",
        "Scale sc 1 1 b0 b1 0=3 1=1",
        "PReLU pr 1 1 b1 b2 0=3",
        "InnerProduct fc 1 1 b2 b3 0=10 1=1 2=480",
        "MemoryData md 0 1 m0 0=10",
        "BinaryOp add 2 1 b3 m0 out 0=0",
    ]
    # BatchNorm 4x3 floats, Scale 3+3, PReLU 3, InnerProduct tag + 480 + bias 10, MemoryData 10
    size = 4 * 3 * 4 + 4 * 3 * 2 + 4 * 3 + (4 + 4 * 480 + 4 * 10) + 4 * 10
    assert lint_param(write_param(tmp_path, lines, bin_bytes=bytes(size))) == []
    f = the_error(lint_param(write_param(tmp_path, lines, bin_bytes=bytes(size - 4))),
                  contains="too short")
    assert f.layer_type == "MemoryData"


def test_bin_zero_sized_weights(tmp_path: Path) -> None:
    line = "Convolution conv0 1 1 data c0 0=8 1=3 4=1 5=1 6=0"
    the_error(lint_param(write_param(tmp_path, replace("Convolution", line))),
              layer_type="Convolution", contains="0 elements")


def test_unmodelled_weight_layer_warns(tmp_path: Path) -> None:
    lines = ["Input data 0 1 data 0=16 1=16 2=3",
             "Gemm g 2 1 data data out 0=1.0 1=1.0"]
    findings = lint_param(write_param(tmp_path, lines, bin_bytes=b""), target="ncnn-latest")
    assert any(f.severity == "warning" and "not modelled" in f.message for f in findings)


def test_bin_missing_file(tmp_path: Path) -> None:
    param = write_param(tmp_path, BASE)
    the_error(lint_param(param, tmp_path / "nope.bin"), contains="cannot read the .bin")


@pytest.mark.parametrize("stem", ["nanodet_m", "nanodet-plus-m_416"])
def test_bin_walk_agrees_with_ncnn(tmp_path: Path, stem: str) -> None:
    """Current ncnn (pip) fails load_model exactly when the linter says the .bin is short."""
    ncnn = pytest.importorskip("ncnn")
    for cut, short in ((0, False), (4, True), (2, True)):
        param, bin_path = _truncated(tmp_path, stem, cut)
        net = ncnn.Net()
        assert net.load_param(str(param)) == 0
        loaded = net.load_model(str(bin_path)) == 0
        linted = errors(lint_param(param, bin_path, target="ncnn-latest"))
        assert loaded is not short
        assert bool(linted) is short


# --------------------------------------------------------------------------- command line


def test_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    clean = runner.invoke(main, [str(write_param(tmp_path, BASE))])
    assert clean.exit_code == 0 and clean.output == "0 error(s), 0 warning(s)\n"
    param = write_param(tmp_path, replace("Sigmoid", "Softmax sm 1 1 c0 out 0=1"), name="bad")
    found = runner.invoke(main, [str(param), "--target", "ncnn-latest"])
    assert found.exit_code == 1
    assert found.output.startswith(f"ERROR: {param}:5: Softmax sm: 0=axis 1 without 1=1")
    usage = runner.invoke(main, [str(param), "--target", "esp32"])
    assert usage.exit_code == 2
    assert len(usage.output.splitlines()) == 1 and "esp32" in usage.output


def test_run_as_a_module(tmp_path: Path) -> None:
    param = write_param(tmp_path, replace("Sigmoid", "FancyOp sig 1 1 c0 out"))
    done = subprocess.run([sys.executable, "-m", "convert.ncnn_lint", str(param)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 1, done.stderr
    assert "not registered" in done.stdout and done.stderr == "1 error(s), 0 warning(s)\n"
