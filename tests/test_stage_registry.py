"""Stages come from the registry: a stage registered here runs, is gated and is shown in every
report; a stage whose reference did not run on an image is an error, never re-referenced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convert import convert_checkpoint
from parity.cli import main
from parity.layouts import Layout
from parity.stage_registry import StageDescriptor, StageRegistry
from parity.stages import STAGES, StageInputs, onnx_stage, torch_stage
from tests.crafted_reports import shard_reports, write_reports
from tests.report_validation import assert_valid_report

NOISE = 1e-3  # added to every output of the registered stage: within the default limits
# The seeded model's detections are noise, which conversions reorder: limits every stage meets,
# so that the verdict turns on the registered stage's own limit alone.
LOOSE = """
[detections]
min_matched_fraction = 0.0
max_extra = 1e9
min_iou = 0.0
max_score_diff = 1.0
max_edge_px = 1e9
max_label_changes = 1e9
min_ap50 = 0.0
[tensors]
max_abs = 1e9
min_cosine = 0.0
min_argmax_agreement = 0.0
[stages.ncnn-fp16.detections]
min_matched_fraction = 0.0
max_extra = 1e9
min_iou = 0.0
max_score_diff = 1.0
max_edge_px = 1e9
min_ap50 = 0.0
[stages.ncnn-fp16.tensors]
max_abs = 1e9
min_cosine = 0.0
min_argmax_agreement = 0.0
"""


class Shifted:
    """A runner's outputs, each element moved by NOISE (distance softmaxes do not change)."""

    def __init__(self, runner):
        self.runner, self.name, self.output_names = runner, runner.name, runner.output_names

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v + np.float32(NOISE) for k, v in self.runner.infer(feed).items()}


def shifted_onnx_stage(descriptor: StageDescriptor, inputs: StageInputs):
    stage = onnx_stage(descriptor, inputs)
    stage.runner = Shifted(stage.runner)
    return stage


class FailsFirst:
    """A runner that raises on its first image and then runs as `runner`."""

    def __init__(self, runner):
        self.runner, self.name, self.output_names = runner, runner.name, runner.output_names
        self.calls = 0

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("reference broke on this image")
        return self.runner.infer(feed)


def torch_failing_first(descriptor: StageDescriptor, inputs: StageInputs):
    stage = torch_stage(descriptor, inputs)
    stage.runner = FailsFirst(stage.runner)
    return stage


@pytest.fixture
def shifted_stage() -> Iterator[StageDescriptor]:
    descriptor = STAGES.register(StageDescriptor(
        "onnx-shifted", 25, shifted_onnx_stage, ("onnx",), colour="#123456"))
    try:
        yield descriptor
    finally:
        STAGES.unregister(descriptor.name)


@pytest.fixture
def failing_reference() -> Iterator[None]:
    original = STAGES["torch"]
    STAGES.unregister("torch")
    STAGES.register(StageDescriptor("torch", original.order, torch_failing_first,
                                    layout=original.layout, reference=True,
                                    colour=original.colour))
    try:
        yield
    finally:
        STAGES.unregister("torch")
        STAGES.register(original)


@pytest.fixture(scope="module")
def folder(small_checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("registry") / "legacy"
    convert_checkpoint(small_checkpoints["legacy"], output=out, verify=False, legacy_head=True)
    return out


def run_check(checkpoint: Path, folder: Path, out: Path, *extra: str):
    """`parity check` with every report; (exit code, report, stderr, JUnit, HTML)."""
    out.mkdir()
    result = CliRunner().invoke(main, [
        "check", str(checkpoint), str(folder), "--synthetic", "0", "-q",
        "--json", str(out / "r.json"), "--junit", str(out / "r.xml"),
        "--html", str(out / "r.html"), *extra])
    report = json.loads((out / "r.json").read_text()) if (out / "r.json").exists() else None
    if report is not None:
        assert_valid_report(report)
    junit = (out / "r.xml").read_text() if (out / "r.xml").exists() else ""
    html = (out / "r.html").read_text() if (out / "r.html").exists() else ""
    return result.exit_code, report, result.stderr, junit, html


def test_a_registered_stage_runs_and_is_in_every_report(shifted_stage, small_checkpoints,
                                                         folder, tmp_path):
    limits = tmp_path / "loose.toml"
    limits.write_text(LOOSE)
    code, report, err, junit, html = run_check(small_checkpoints["legacy"], folder,
                                               tmp_path / "plain", "--tolerances", limits)
    assert code == 0, err
    names = [row["name"] for row in report["stages"]]
    assert names[:4] == ["torch", "torch-legacy", "onnx", "onnx-shifted"]
    row = report["stages"][3]
    assert row["status"] == "ran" and row["compared_with"] == ["onnx"]
    assert row["colour"] == "#123456" and not row["reference"]
    figures = report["summary"]["onnx-shifted"]
    assert figures["compared_with"] == "onnx" and figures["errors"] == 0
    assert max(t["max_abs"] for t in figures["tensors"].values()) == pytest.approx(NOISE,
                                                                                rel=1e-2)
    mine = [c for c in report["gate"]["checks"] if c["stage"] == "onnx-shifted"]
    assert any(c["check"].endswith(".max_abs") for c in mine) and all(c["passed"] for c in mine)
    assert "onnx-shifted" in err  # the terminal table
    assert 'classname="parity.onnx-shifted"' in junit
    assert "onnx-shifted" in html and "#123456" in html


def test_a_registered_stage_is_gated(shifted_stage, small_checkpoints, folder, tmp_path):
    limits = tmp_path / "limits.toml"
    limits.write_text(LOOSE + f"[stages.onnx-shifted.tensors]\nmax_abs = {NOISE / 10}\n")
    code, report, err, junit, html = run_check(small_checkpoints["legacy"], folder,
                                               tmp_path / "gated", "--tolerances", limits)
    assert code == 1, err
    assert report["gate"]["failing_stages"] == ["onnx-shifted"]
    assert any(c["stage"] == "onnx-shifted" and not c["passed"]
               and c["check"].endswith(".max_abs") for c in report["gate"]["checks"])
    assert "FAIL onnx-shifted: tensors." in " ".join(err.split())
    assert '<failure message="' in junit
    assert "onnx-shifted" in html and "FAIL" in html


def test_tolerances_of_an_unregistered_stage_are_refused(small_checkpoints, folder, tmp_path):
    limits = tmp_path / "limits.toml"
    limits.write_text("[stages.onnx-shifted.tensors]\nmax_abs = 0.1\n")
    result = CliRunner().invoke(main, ["check", str(small_checkpoints["legacy"]), str(folder),
                                       "--tolerances", str(limits), "-q"])
    assert result.exit_code == 2
    assert "unknown key stages.onnx-shifted" in result.stderr


def test_a_stage_without_its_reference_is_an_error(failing_reference, small_checkpoints,
                                                    folder, tmp_path):
    limits = tmp_path / "loose.toml"
    limits.write_text(LOOSE)
    code, report, err, _, _ = run_check(small_checkpoints["legacy"], folder, tmp_path / "r",
                                        "--tolerances", limits)
    assert code == 1, err
    assert {c["check"] for c in report["gate"]["checks"] if not c["passed"]} == {"errors"}
    broken = [r for r in report["records"] if "error" in r["stages"]["torch"]]
    assert len(broken) == 1 and "reference" not in broken[0]
    ran = [row["name"] for row in report["stages"] if row["status"] == "ran"]
    for name in ran[1:]:
        assert broken[0]["stages"][name] == {
            "error": "no reference: torch did not run on this image"}
        assert report["summary"][name]["errors"] == 1
    assert report["gate"]["blamed_stage"] == "torch"
    assert set(report["gate"]["failing_stages"]) == set(ran)
    intact = [r for r in report["records"] if r is not broken[0]]
    assert all("detections" in r["stages"][ran[1]] for r in intact)


def noop_stage(descriptor, inputs):  # never built: the registry refuses the descriptors
    raise AssertionError


@pytest.mark.parametrize("descriptors, phrase", [
    ([StageDescriptor("a", 0, noop_stage, reference=True),
      StageDescriptor("a", 1, noop_stage)], "already registered"),
    ([StageDescriptor("a", 0, noop_stage, reference=True),
      StageDescriptor("b", 0, noop_stage)], "order 0 is taken"),
    ([StageDescriptor("a", 5, noop_stage, reference=True),
      StageDescriptor("b", 1, noop_stage, ("a",))], "not a registered earlier stage"),
    ([StageDescriptor("a", 0, noop_stage, reference=True),
      StageDescriptor("b", 1, noop_stage, reference=True)], "reference stage already"),
], ids=["twice", "same-order", "later-predecessor", "two-references"])
def test_the_registry_refuses_inconsistent_stages(descriptors, phrase):
    registry = StageRegistry()
    for descriptor in descriptors[:-1]:
        registry.register(descriptor)
    with pytest.raises(ValueError, match=phrase):
        registry.register(descriptors[-1])


def test_descriptors_check_their_colour_and_checks():
    with pytest.raises(ValueError, match="not #rrggbb"):
        StageDescriptor("a", 0, noop_stage, colour="red")
    with pytest.raises(ValueError, match="unknown check"):
        StageDescriptor("a", 0, noop_stage, checks=("gpu",))


def test_the_reference_must_come_first():
    registry = StageRegistry()
    registry.register(StageDescriptor("a", 0, noop_stage))
    registry.register(StageDescriptor("b", 1, noop_stage, reference=True))
    with pytest.raises(ValueError, match="first registered stage must be the reference"):
        registry.reference()


def test_layouts_answer_blob_questions():
    value = np.arange(16, dtype=np.float32).reshape(2, 8)
    softmax = Layout.LEGACY.compared_form(1, value)
    assert np.allclose(softmax.reshape(2, 4, 2).sum(axis=2), 1.0)
    for layout, position in ((Layout.LEGACY, 0), (Layout.NATIVE, 1), (Layout.PLUS_NATIVE, 0)):
        assert layout.compared_form(position, value) is value
    assert Layout.LEGACY.class_columns(0, 3) == 3 and Layout.LEGACY.class_columns(1, 3) is None
    assert Layout.PLUS_NATIVE.class_columns(0, 80) == 80


@pytest.mark.parametrize("edit, phrase", [
    (lambda stages: stages.reverse(), "first stage, and only it, is the reference"),
    (lambda stages: stages[1].update(order=99), "not in pipeline order"),
    (lambda stages: stages[1].update(compared_with=["device"]), "'device' is not an earlier"),
    (lambda stages: stages[1].update(colour="url(x)"), "not a colour"),
    (lambda stages: stages[1].update(checks=["gpu"]), "stages[1].checks[0]"),
], ids=["reversed", "order", "later-predecessor", "colour", "check"])
def test_merge_checks_the_stage_table(tmp_path, edit, phrase):
    reports = shard_reports(2, images=2)
    for report in reports:
        edit(report["stages"])
    result = CliRunner().invoke(main, ["merge", *map(str, write_reports(tmp_path, reports)),
                                       "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    assert phrase in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_merge_refuses_records_of_stages_outside_the_table(tmp_path):
    reports = shard_reports(2, images=2)
    for report in reports:
        report["stages"] = [s for s in report["stages"] if s["name"] != "device"]
    result = CliRunner().invoke(main, ["merge", *map(str, write_reports(tmp_path, reports)),
                                       "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    assert "'device' is not a stage that ran" in result.stderr
