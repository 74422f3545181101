"""Readers of untrusted files: bad input is one InputError naming the file and key, never a
crash. Explicit cases first, then property-based fuzzing of every reader."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import InputError, ToolError
from convert import convert_checkpoint
from convert.ncnn_lint import Finding, lint_param
from parity.gate import FRACTIONS, load_tolerances
from parity.model_folder import read_model_folder
from parity.ncnn_param import Param
from parity.report import merge_reports, read_report
from tests.crafted_reports import shard_reports
from tests.json_edits import DELETE, assign

# FUZZ_EXAMPLES=5000 for a longer hunt
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def folder(tmp_path_factory, small_checkpoints) -> Path:
    """The small Plus model converted for the UnitV2 (legacy layout, model.json)."""
    out = tmp_path_factory.mktemp("fuzz") / "unitv2"
    convert_checkpoint(small_checkpoints["plus"], legacy_head=True, output=out, verify=False)
    return out


@pytest.fixture()
def copy_of(folder, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


def refused(action: Callable[[], Any], *phrases: str) -> str:
    """The one-line InputError `action` raises, holding every phrase."""
    with pytest.raises(InputError) as caught:
        action()
    text = str(caught.value)
    assert "\n" not in text, text
    for phrase in phrases:
        assert phrase in text, text
    return text


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))



# ------------------------------------------------------------------ manifest.json, model.json


@pytest.mark.parametrize("edit, phrase", [
    (assign("input", "width", "wide"), "input.width: must be an integer, not a string 'wide'"),
    (assign("input", "width", 330), "input.width: must be a multiple of 32"),
    (assign("input", "height", 0), "input.height: must be at least 32"),
    (assign("input", "height", 320.0), "input.height: must be an integer"),
    (assign("input", "width", 1 << 20), "input.width: must be at most 4096"),
    (assign("input", "name", 7), "input.name: must be a string"),
    (assign("layout", "sideways"), "layout: must be one of legacy, plus-native"),
    (assign("outputs", "output"), "outputs: must be a list"),
    (assign("outputs", ["a", "b"]), "outputs: the legacy layout has 6 output blobs, not 2"),
    (assign("outputs", 2, 5), "outputs[2]: must be a string"),
    (assign("architecture", "head", DELETE), "architecture.head: missing"),
    (assign("architecture", "neck", []), "architecture.neck: must be an object"),
    (assign("rewrite", "stride64", "sometimes"), "rewrite.stride64: must be one of fold, drop"),
    (assign("rewrite", "centre_compensation", "yes"),
     "rewrite.centre_compensation: must be true or false"),
    (assign("target", "esp32"), "target: must be one of unitv2, ncnn-latest"),
    (assign("input", DELETE), "input: missing"),
])
def test_manifest_values_are_checked(copy_of, edit, phrase):
    edit_json(copy_of / "manifest.json", edit)
    refused(lambda: read_model_folder(copy_of), str(copy_of / "manifest.json"), phrase)


@pytest.mark.parametrize("edit, phrase", [
    (assign("modelType", "yolo"), "modelType: must be one of nanodet"),
    (assign("numOfClass", "3"), "numOfClass: must be an integer"),
    (assign("numOfClass", 4), "numOfClass: is 4 but className holds 3 names"),
    (assign("className", [1, 2, 3]), "className[0]: must be a string"),
    (assign("modelParamName", None), "modelParamName: must be a string"),
    (assign("model", "modelOutputNodes", [{"cls_pred": "a", "dis_pred": "b"}]),
     "model.modelOutputNodes: must have at least 3 items"),
    (assign("model", "modelOutputNodes", 1, "dis_pred", DELETE),
     "model.modelOutputNodes[1].dis_pred: missing"),
    (assign("className", [c * 3000 for c in "xyz"]), "the firmware reads it into 8192"),
])
def test_model_json_values_are_checked(copy_of, edit, phrase):
    edit_json(copy_of / "model.json", edit)
    refused(lambda: read_model_folder(copy_of), str(copy_of / "model.json"), phrase)


@pytest.mark.parametrize("key", ["modelParamName", "modelBinName"])
@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/model.param",
                                  "..", ".", "model.param\0x"])
def test_model_json_cannot_name_files_outside_the_folder(copy_of, key, name):
    (copy_of / "sub").mkdir()
    shutil.copy(copy_of / "model.param", copy_of / "sub" / "model.param")
    edit_json(copy_of / "model.json", assign(key, name))
    refused(lambda: read_model_folder(copy_of), str(copy_of / "model.json"), f"{key}: ",
            "not the name of a file in the model folder itself")


def test_model_json_cannot_name_a_link_leading_out(copy_of, tmp_path):
    outside = tmp_path / "outside.param"
    shutil.copy(copy_of / "model.param", outside)
    os.symlink(outside, copy_of / "link.param")
    edit_json(copy_of / "model.json", assign("modelParamName", "link.param"))
    refused(lambda: read_model_folder(copy_of), "modelParamName: 'link.param' is a link "
            "leading out of the model folder")


def test_the_converters_files_cannot_be_links_leading_out(copy_of, tmp_path):
    outside = tmp_path / "outside.bin"
    (copy_of / "model.bin").rename(outside)
    os.symlink(outside, copy_of / "model.bin")
    refused(lambda: read_model_folder(copy_of), str(copy_of / "model.bin"),
            "a link leading out of the model folder")


def test_model_json_must_name_existing_files(copy_of):
    edit_json(copy_of / "model.json", assign("modelBinName", "weights.bin"))
    refused(lambda: read_model_folder(copy_of), "modelBinName: 'weights.bin' is not a file in "
            "the model folder")


def test_the_device_loads_the_files_model_json_names(copy_of):
    shutil.copy(copy_of / "model.param", copy_of / "device.param")
    edit_json(copy_of / "model.json", assign("modelParamName", "device.param"))
    folder = read_model_folder(copy_of)
    assert folder.device_param == copy_of / "device.param"
    assert folder.device_bin == copy_of / "model.bin" and folder.param == copy_of / "model.param"


def test_a_unitv2_folder_needs_model_json(copy_of):
    (copy_of / "model.json").unlink()
    refused(lambda: read_model_folder(copy_of), str(copy_of / "model.json"),
            "missing: manifest.json says the folder is for the UnitV2")
    edit_json(copy_of / "manifest.json", assign("target", "ncnn-latest"))
    assert read_model_folder(copy_of).firmware_json is None  # not for the device: no model.json


def test_only_the_first_three_output_nodes_reach_the_device(copy_of):
    edit_json(copy_of / "model.json", lambda doc: doc["model"]["modelOutputNodes"].append(
        {"cls_pred": "extra_cls", "dis_pred": "extra_dis"}))
    assert "extra_cls" not in read_model_folder(copy_of).output_names


@pytest.mark.parametrize("content, phrase", [
    (b"[" * 100_000, "not readable JSON"),
    (b'{"a": ' + b"1" * 5000 + b"}", "not readable JSON"),
    (b"\xff\xfe\x00", "not readable JSON"),
    (b"[]", "must hold a JSON object"),
], ids=["deep", "long-number", "not-utf8", "list"])
def test_unreadable_json_is_one_line(copy_of, content, phrase):
    (copy_of / "manifest.json").write_bytes(content)
    refused(lambda: read_model_folder(copy_of), str(copy_of / "manifest.json"), phrase)


# ------------------------------------------------------------------ tolerances


@pytest.mark.parametrize("text, phrase", [
    ("[detections]\nmax_edge_px = -1.0", "detections.max_edge_px = -1.0: must be finite and >= 0"),
    ("[detections]\nmax_extra = inf", "detections.max_extra = inf: must be finite"),
    ("[tensors]\nmax_abs = nan", "tensors.max_abs = nan: must be finite"),
    ("[detections]\nmin_iou = 1.5", "detections.min_iou = 1.5: must lie in [0, 1]"),
    ("[stages.ncnn.tensors]\nmin_cosine = -0.5", "stages.ncnn.tensors.min_cosine = -0.5"),
    ("[inputs]\nmin_identical_fraction = nan", "inputs.min_identical_fraction = nan"),
    ("[stages.onnx.stages.ncnn.detections]\nmin_iou = 0.5", "unknown key stages.onnx.stages"),
    ("x = " + "[" * 5000, "not valid TOML"),
    ("x = " + "1" * 5000, "not valid TOML"),
], ids=["negative", "inf", "nan", "fraction-above-1", "negative-cosine", "nan-fraction",
        "nested-stages", "deep", "long-number"])
def test_tolerance_limits_are_checked(tmp_path, text, phrase):
    path = tmp_path / "limits.toml"
    path.write_text(text)
    refused(lambda: load_tolerances(path), str(path), phrase)


# ------------------------------------------------------------------ .param


@pytest.mark.parametrize("text, phrase", [
    ("", "line 1 must be the magic 7767517, got ''"),
    ("7767517\n", "line 2 must be '<layer_count> <blob_count>'"),
    ("7767517\n1 x\n", "line 2 must be '<layer_count> <blob_count>'"),
    ("7767517\n2 1\nInput data 0 1 data\n", "line 2 declares 2 layers but the file has 1"),
    ("7767517\n1 1\nInput data 0\n", "line 3: layer line needs '<Type> <name>"),
    ("7767517\n1 1\nInput data 0 3 data\n", "line 3: declares 0 bottom and 3 top blobs"),
    ("7767517\n1 1\nInput data 0 1 data 0=1 x\n", "line 3: token 'x' is not id=value"),
    ("7767517\n1 1\nInput data 0 1 data " + "9" * 5000 + "=1\n", "is not id=value"),
    ("7767517\n1 1\nInput data ٣ 1 data\n", "line 3: declares 3 bottom and 1 top blobs"),
    ("7767517\n1 1\nInput data 0 1 " + "d" * 256 + "\n", "line 3: blob name is 256 characters"),
], ids=["empty", "no-counts", "bad-count", "layer-count", "short-layer", "few-blobs",
        "bad-param", "long-key", "non-ascii-digit", "long-name"])
def test_param_lines_are_checked(text, phrase):
    refused(lambda: Param.parse(text, "m.param"), "m.param", phrase)


def test_param_read_names_the_file(tmp_path):
    path = tmp_path / "m.param"
    path.write_bytes(b"7767517\n\xff\n")
    refused(lambda: Param.read(path), str(path), "not UTF-8")
    refused(lambda: Param.read(tmp_path / "none.param"), "none.param", "cannot be read")


ODD_LAYOUT = ("7767517\r\n2 2\r\n\r\nInput  in 0 1 data 0=8 1=8 2=3\r\n"
              'UnaryOp   u 1 1 data out 0=7 -23309=2,1,2.5 3="a b"  \r\n')


def test_an_unchanged_param_is_written_back_byte_for_byte(tmp_path):
    path = tmp_path / "m.param"
    path.write_bytes(ODD_LAYOUT.encode())
    param = Param.read(path)
    param.rename_blob("nowhere", "x")
    param.write(tmp_path / "copy.param")
    assert (tmp_path / "copy.param").read_bytes() == ODD_LAYOUT.encode()


def test_param_layers_are_typed():
    unary = Param.parse(ODD_LAYOUT).layers[1]
    assert (unary.line, unary.type, unary.bottoms, unary.tops) == (5, "UnaryOp", ["data"], ["out"])
    array, text = unary.params[1], unary.params[2]
    assert (array.key, array.id, array.form) == (-23309, 9, "array")
    assert [(v.kind, v.number) for v in array.values] == [("int", 1), ("float", 2.5)]
    assert (text.form, text.value_text) == ("string", '"a b"')  # one quoted token
    assert unary.params[0].number(0) == 7 and unary.params[0].number(0.0) != 7
    assert unary.get(-23309) == "2,1,2.5"


def test_an_edited_param_is_written_as_pnnx_writes_it():
    param = Param.parse(ODD_LAYOUT)
    param.rename_blob("data", "input")
    param.layers[1].set(0, "8")
    assert param.text() == (
        "7767517\n2 2\n"
        f"{'Input':<24} {'in':<24} 0 1 input 0=8 1=8 2=3\n"
        f"{'UnaryOp':<24} {'u':<24} 1 1 input out 0=8 -23309=2,1,2.5 3=\"a b\"\n")
    assert len(Param.parse(param.text()).layers) == 2


LONG = "9" * 5000  # int() refuses more than 4300 digits


@pytest.mark.parametrize("target", ["unitv2", "ncnn-latest"])
@pytest.mark.parametrize("lines", [
    f"{LONG} 1\nInput data 0 1 data", f"1 1\nInput data 0 1 data {LONG}=1",
    f"1 1\nInput data 0 1 data -23300={LONG},1", f"1 1\nInput data {LONG} 1 data",
    f"1 1\nInput data 0 1 data 0=1,{LONG}", "1 1\nInput data 0 1 data 0=1e400",
], ids=["header", "key", "array-count", "blob-count", "list", "inf-as-int"])
def test_lint_reports_huge_numbers_as_findings(tmp_path, lines, target):
    param = tmp_path / "m.param"
    param.write_text(f"7767517\n{lines}\n")
    findings = lint_param(param, None, target)
    assert any(f.severity == "error" for f in findings) or "1e400" in lines


# ------------------------------------------------------------------ fuzzing

SPECIAL_STRINGS = st.sampled_from(["", "inf", "-inf", "nan", "..", "../x", "/etc/passwd",
                                   "a/b", "x\ny", "legacy", "unitv2", "1/2", "2/2", "0/0",
                                   "model.param", "model.bin", "fold"])
LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(-2, 400)
          | st.floats() | st.text(max_size=8) | SPECIAL_STRINGS)
JSON_VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6) | SPECIAL_STRINGS, inner,
                                             max_size=4), max_leaves=12)


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """`document` with 1-3 nodes replaced by random JSON or deleted (walking down at random,
    so every level of the structure is hit)."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        parent, key = None, None
        node = doc
        while isinstance(node, dict | list) and node and (parent is None or draw(
                st.integers(0, 4)) > 0):
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            parent, key = node, draw(st.sampled_from(keys))
            node = node[key]
        if parent is None:
            return draw(JSON_VALUES)
        if draw(st.integers(0, 3)) == 0:
            del parent[key]
        else:
            parent[key] = draw(JSON_VALUES)
    return doc


def only_tool_errors(action: Callable[[], Any]) -> Any:
    """Run `action`; a ToolError must be one line; anything else escapes (and fails)."""
    try:
        return action()
    except ToolError as exc:
        assert "\n" not in str(exc), str(exc)
        return None


def assert_usable(folder) -> None:
    """What parity reads from a folder it accepted has the types it needs."""
    width, height = folder.input_size
    assert all(type(v) is int and 32 <= v <= 4096 and v % 32 == 0 for v in (width, height))
    assert isinstance(folder.input_name, str) and folder.input_name
    names = folder.output_names_of_manifest
    assert len(names) == (6 if folder.layout == "legacy" else 1)
    assert all(isinstance(n, str) for n in [*names, *folder.output_names, *folder.class_names])
    assert len(folder.output_names) == len(names) or folder.firmware_json is None
    for part in ("backbone", "neck", "head"):
        assert isinstance(folder.manifest["architecture"][part], dict)
    for path in (folder.param, folder.bin, folder.device_param, folder.device_bin):
        assert path.is_file() and path.parent == folder.path


@pytest.fixture(scope="module")
def scratch(folder, tmp_path_factory) -> Path:
    """One copy of the folder whose JSON files the fuzz tests overwrite."""
    target = tmp_path_factory.mktemp("scratch") / "model"
    shutil.copytree(folder, target)
    return target


@FUZZ
@given(data=st.data())
def test_fuzz_manifest(folder, scratch, data):
    original = json.loads((folder / "manifest.json").read_text())
    document = data.draw(mutated(original) | JSON_VALUES)
    (scratch / "manifest.json").write_text(json.dumps(document))
    shutil.copy(folder / "model.json", scratch / "model.json")
    found = only_tool_errors(lambda: read_model_folder(scratch))
    if found is not None:
        assert_usable(found)


@FUZZ
@given(data=st.data())
def test_fuzz_model_json(folder, scratch, data):
    original = json.loads((folder / "model.json").read_text())
    document = data.draw(mutated(original) | JSON_VALUES)
    shutil.copy(folder / "manifest.json", scratch / "manifest.json")
    (scratch / "model.json").write_text(json.dumps(document))
    found = only_tool_errors(lambda: read_model_folder(scratch))
    if found is not None:
        assert_usable(found)


@FUZZ
@given(content=st.binary(max_size=200))
def test_fuzz_manifest_bytes(folder, scratch, content):
    (scratch / "manifest.json").write_bytes(content)
    only_tool_errors(lambda: read_model_folder(scratch))


PARAM_TOKENS = st.text(alphabet="0123456789-=,.eE\"abcInput ", max_size=12)


@st.composite
def mutated_param(draw: st.DrawFn, text: str) -> str:
    """A real .param with a few tokens replaced, lines dropped or repeated."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["token", "drop", "repeat", "junk"]))
        if action == "drop":
            del lines[index]
        elif action == "repeat":
            lines.insert(index, lines[index])
        elif action == "junk":
            lines[index] = draw(st.text(max_size=30))
        else:
            tokens = lines[index].split() or [""]
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(PARAM_TOKENS)
            lines[index] = " ".join(tokens)
        if not lines:
            break
    return "\n".join(lines) + "\n"


def assert_param_usable(param: Param) -> None:
    """What callers do with a parsed param works: get/set every key, write and re-read."""
    for layer in param.layers:
        for typed in list(layer.params):
            layer.set(typed.key, layer.get(typed.key))
    assert len(Param.parse(param.text()).layers) == len(param.layers)


@FUZZ
@given(data=st.data())
def test_fuzz_param_parser(folder, data):
    real = (folder / "model.param").read_text()
    text = data.draw(mutated_param(real) | st.text(max_size=200)
                     | st.text(max_size=200).map(lambda t: "7767517\n" + t))
    param = only_tool_errors(lambda: Param.parse(text, "fuzz.param"))
    if param is not None:
        assert_param_usable(param)


LAYER_TYPES = st.sampled_from([
    "Input", "Convolution", "ConvolutionDepthWise", "Deconvolution", "InnerProduct", "Reshape",
    "Permute", "Reduction", "Crop", "Slice", "Interp", "BinaryOp", "UnaryOp", "Split", "Concat",
    "Softmax", "MemoryData", "Padding", "Eltwise", "Pooling", "Squeeze", "ExpandDims", "Clip",
    "Gemm", "LSTM", "Convolution3D", "BatchNorm", "Scale", "PReLU", "Unknown"])
PARAM_KEYS = st.integers(-23340, -23295) | st.integers(-3, 40)
PARAM_VALUES = st.sampled_from(["0", "1", "-1", "2", "5", "9", "1.0", "-0.5", "1e30", "1e400",
                                "nan", "2,1,2", "3,1.0,2.0,3.0", "1,-233", "abc", '"x"',
                                "2147483648", "4096", "1.5e"]) | PARAM_TOKENS


@st.composite
def plausible_params(draw: st.DrawFn) -> str:
    """Layers of known types with plausible (and implausible) counts, blobs and params."""
    blobs, lines = ["data"], ["Input data 0 1 data 0=8 1=8 2=3"]
    for index in range(draw(st.integers(0, 8))):
        bottoms = draw(st.lists(st.sampled_from(blobs), max_size=3))
        tops = [f"b{draw(st.integers(0, 12))}" for _ in range(draw(st.integers(0, 3)))]
        params = [f"{draw(PARAM_KEYS)}={draw(PARAM_VALUES)}"
                  for _ in range(draw(st.integers(0, 6)))]
        lines.append(" ".join([draw(LAYER_TYPES), f"l{index}", str(len(bottoms)),
                               str(len(tops)), *bottoms, *tops, *params]))
        blobs += tops
    counts = draw(st.sampled_from([f"{len(lines)} {len(blobs)}", "1 1", "0 0", "-1 5"]))
    return "7767517\n" + counts + "\n" + "\n".join(lines) + "\n"


@FUZZ
@given(data=st.data(), target=st.sampled_from(["unitv2", "ncnn-latest"]))
def test_fuzz_lint_parser(folder, data, target):
    """The linter reports findings for any file; it never raises."""
    real = (folder / "model.param").read_text()
    content = data.draw(mutated_param(real).map(str.encode) | st.binary(max_size=200)
                        | plausible_params().map(str.encode)
                        | st.text(max_size=200).map(lambda t: ("7767517\n" + t).encode()))
    weights = data.draw(st.just((folder / "model.bin").read_bytes()) | st.binary(max_size=64))
    with tempfile.TemporaryDirectory() as work:
        param, bin_path = Path(work) / "m.param", Path(work) / "m.bin"
        param.write_bytes(content)
        bin_path.write_bytes(weights)
        findings = lint_param(param, bin_path, target)
    assert all(isinstance(f, Finding) and "\n" not in f.message for f in findings)


TOML_VALUES = st.sampled_from(["nan", "inf", "-inf", "+inf", "-1", "0", "1", "0.5", "1.5",
                               "1e400", "-0.0", "true", '"x"', "[1, 2]", "{a = 1}", "1979-05-27",
                               "0x10", "1_000", "9" * 30])
TOML_KEYS = st.sampled_from(["min_iou", "max_extra", "max_abs", "min_cosine", "min_ap50",
                             "max_edge_px", "min_identical_fraction", "max_device_input_diff",
                             "wobble", "stages"])
TOML_TABLES = st.sampled_from(["detections", "tensors", "inputs", "stages.ncnn.detections",
                               "stages.device.inputs", "stages.gpu.tensors", "stages",
                               "stages.ncnn", "other"])


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    lines = []
    for table in draw(st.lists(TOML_TABLES, max_size=3, unique=True)):
        lines.append(f"[{table}]")
        for key in draw(st.lists(TOML_KEYS, max_size=3, unique=True)):
            value = draw(TOML_VALUES | st.floats(allow_nan=False, allow_infinity=False).map(repr))
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def assert_limits_in_range(tolerances: dict[str, Any]) -> None:
    sections = [tolerances[s] for s in ("detections", "tensors", "inputs")]
    sections += [s for stage in tolerances.get("stages", {}).values() for s in stage.values()]
    for section in sections:
        for key, value in section.items():
            assert math.isfinite(value), (key, value)
            assert 0 <= value <= (1 if key in FRACTIONS else math.inf), (key, value)


@FUZZ
@given(text=toml_documents() | st.text(max_size=120))
def test_fuzz_tolerances(text):
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "limits.toml"
        path.write_text(text)
        tolerances = only_tool_errors(lambda: load_tolerances(path))
    if tolerances is not None:
        assert_limits_in_range(tolerances)


@pytest.fixture(scope="module")
def reports() -> list[dict]:
    return shard_reports(2, images=2)


@FUZZ
@given(data=st.data())
def test_fuzz_merge(reports, data):
    """A mutated shard merged with its intact partner: a merged report or one InputError."""
    which = data.draw(st.integers(0, 1))
    documents = copy.deepcopy(reports)
    documents[which] = data.draw(mutated(reports[which]))
    with tempfile.TemporaryDirectory() as work:
        paths = []
        for index, document in enumerate(documents):
            path = Path(work) / f"shard{index + 1}.json"
            path.write_text(json.dumps(document))
            paths.append(path)
        merged = only_tool_errors(lambda: merge_reports([(p, read_report(p)) for p in paths]))
    if merged is not None:
        assert merged.images.count == len(merged.records)
        assert isinstance(merged.gate.passed, bool)
