"""The report's types, their codec, and the JSON Schema generated from them."""

from __future__ import annotations

import copy
import dataclasses
import json
from importlib import resources

import pytest

from parity.json_shape import ShapeError
from parity.report_codec import decode, encode, json_schema
from parity.report_schema import SCHEMA_FILE, report_schema, report_schema_text
from parity.report_types import SCHEMA_VERSION, Images, Report
from tests.crafted_reports import shard_reports
from tests.report_validation import assert_valid_report, schema_errors


def test_the_shipped_schema_is_the_generated_one():
    shipped = (resources.files("parity") / "data" / SCHEMA_FILE).read_text(encoding="utf-8")
    assert shipped == report_schema_text(), "run `python -m parity.report_schema`"
    schema = json.loads(shipped)
    assert schema["$id"] == f"urn:nanodet-unitv2:parity-report:{SCHEMA_VERSION}"
    assert schema["$defs"]["Report"]["properties"]["schema_version"] == {
        "enum": [SCHEMA_VERSION]}


@pytest.fixture(scope="module")
def report() -> dict:
    return shard_reports(2, images=3)[0]


def test_crafted_reports_validate_and_round_trip(report):
    assert_valid_report(report)
    typed = decode(Report, report)
    assert encode(typed) == report
    assert decode(Report, encode(typed)) == typed
    assert typed.stages[0].reference and typed.records[0].stages["torch"].match.pairs


@pytest.mark.parametrize("edit, path", [
    (lambda r: r["stages"][0].pop("colour"), "stages.0"),
    (lambda r: r["stages"][0].update(layout="sideways"), "stages.0.layout"),
    (lambda r: r["records"][0]["stages"]["onnx"].update(extra_key=1), "records.0.stages.onnx"),
    (lambda r: r["summary"]["onnx"].update(errors=-1), "summary.onnx"),
    (lambda r: r["gate"].update(passed="yes"), "gate.passed"),
    (lambda r: r["records"][0]["reference"][0].append(1), "records.0.reference"),
], ids=["no-colour", "layout", "unknown-key", "negative-count", "verdict", "long-row"])
def test_the_schema_and_the_decoder_refuse_the_same_breakage(report, edit, path):
    broken = copy.deepcopy(report)
    edit(broken)
    assert any(e.startswith(path) for e in schema_errors(broken)), schema_errors(broken)
    with pytest.raises(ShapeError):
        decode(Report, broken)


def test_figures_may_be_infinite_as_strings(report):
    device = report["summary"]["device"]
    assert device["input_max_diff"] == "inf"
    assert decode(Report, report).summary["device"].input_max_diff == float("inf")
    assert "inf" in json.dumps(report_schema()["$defs"]["StageFigures"])


def test_a_report_field_is_one_dataclass_field(report):
    """Adding a field (here `camera` to `images`) is one line in parity/report_types.py: the
    codec reads and writes it and the generated schema requires it, with no other change."""
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ImagesWithCamera(Images):
        camera: str

    camera = ImagesWithCamera
    images = {**report["images"], "camera": "UnitV2"}
    typed = decode(camera, images, "images")
    assert typed.camera == "UnitV2" and encode(typed) == images
    with pytest.raises(ShapeError, match="images: camera: missing|images.camera"):
        decode(camera, report["images"], "images")
    schema = json_schema(camera, "extended", "urn:test")
    definition = schema["$defs"]["ImagesWithCamera"]
    assert definition["properties"]["camera"] == {"type": "string"}
    assert "camera" in definition["required"]
