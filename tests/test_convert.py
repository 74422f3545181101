"""`convert` end to end: real checkpoints through ONNX, onnxsim, pnnx, lint and verify."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from common.errors import StageError
from convert import convert_checkpoint, pipeline
from convert.cli import main
from convert.verify import verify_folder
from heads.loader import load_detector
from heads.plus_to_legacy import PlusToLegacy
from parity.model_folder import legacy_output_names, read_model_folder
from parity.preprocess import frame_to_tensor
from parity.runners.ncnn_runner import NcnnRunner
from parity.synthetic import default_frames
from tests.conftest import LEGACY_CFG, LEGACY_PTH, PLUS_CFG, PLUS_PTH, REFERENCE_NCNN

FRAMES = default_frames(40)


@pytest.fixture(scope="module")
def plus_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("plus") / "plus-unitv2"
    result = CliRunner().invoke(main, [str(PLUS_PTH), "--config", str(PLUS_CFG), "--legacy-head",
                                       "-o", str(out), "--tar", "-q"])
    assert result.exit_code == 0, result.output + result.stderr
    return out


@pytest.fixture(scope="module")
def legacy_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("legacy") / "legacy-unitv2"
    convert_checkpoint(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True, output=out, fp16=False)
    return out


def test_plus_folder_is_what_the_firmware_reads(plus_folder):
    names = sorted(p.name for p in plus_folder.iterdir())
    assert names == ["manifest.json", "model.bin", "model.json", "model.onnx", "model.param",
                     "model.sim.onnx"]
    firmware = json.loads((plus_folder / "model.json").read_text())
    assert firmware["modelType"] == "nanodet"
    assert firmware["modelParamName"] == "model.param" and firmware["modelBinName"] == "model.bin"
    assert firmware["numOfClass"] == len(firmware["className"]) == 80
    assert firmware["className"][0] == "person"
    nodes = firmware["model"]["modelOutputNodes"]
    assert [n["cls_pred"] for n in nodes] == [f"cls_pred_stride_{s}" for s in (8, 16, 32)]
    assert [n["dis_pred"] for n in nodes] == [f"dis_pred_stride_{s}" for s in (8, 16, 32)]
    param = (plus_folder / "model.param").read_text()
    assert "Input                    input.1" in param
    manifest = json.loads((plus_folder / "manifest.json").read_text())
    assert manifest["verification"]["status"] == "passed"
    assert manifest["rewrite"]["stride64"] == "fold" and manifest["weights"] == "fp16"
    assert set(manifest["files"]) == {"model.bin", "model.json", "model.onnx", "model.param",
                                      "model.sim.onnx"}
    assert manifest["tool"]["libraries"]["torch"].startswith("2.13")
    assert (plus_folder.parent / "plus-unitv2.tar.gz").is_file()


def test_plus_ncnn_firmware_decode_equals_native_plus(plus_folder):
    loaded = load_detector(PLUS_PTH, PLUS_CFG)
    folder = read_model_folder(plus_folder)
    result = verify_folder(loaded, folder.param, folder.bin, "legacy", folder.input_name,
                           folder.output_names, (320, 256), FRAMES)
    assert result.reference_detections > 100
    assert result.matched_fraction >= 0.99, result.missing
    assert not result.extra
    assert result.stride64_only > 0  # the photos do exercise the stride-64 level


def test_naive_rewrite_fails_verification(tmp_path, monkeypatch):
    """Slicing Plus outputs as they are (no centre shift, stride 64 dropped) must fail."""

    def naive(loaded, legacy_head, stride64):
        wrapper = PlusToLegacy(loaded.model, "drop", compensate=False)
        return pipeline.ExportPlan(wrapper, "legacy", "input.1", legacy_output_names(),
                                   {"strategy": "naive", "detail": "naive slicing"})

    monkeypatch.setattr(pipeline, "plan_export", naive)
    out = tmp_path / "naive"
    result = convert_checkpoint(PLUS_PTH, legacy_head=True, output=out, frames=FRAMES[:12])
    assert result.exit_code == 1
    assert result.verification.matched_fraction < 0.5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["status"] == "failed"


def test_legacy_conversion_matches_reference_ncnn(legacy_folder):
    """No rewrite for NanoDet-m: outputs equal the public NCNN model's."""
    folder = read_model_folder(legacy_folder)
    assert json.loads((legacy_folder / "manifest.json").read_text())["rewrite"]["strategy"] \
        == "none"
    ours = NcnnRunner(folder.param, folder.bin, "input.1", folder.output_names)
    reference = NcnnRunner(REFERENCE_NCNN / "nanodet_m.param", REFERENCE_NCNN / "nanodet_m.bin",
                           "input.1", ["792", "795", "814", "817", "836", "839"])
    for _, frame in FRAMES[:6]:
        feed, _ = frame_to_tensor(frame, 320, 256)
        a, b = ours.infer(feed), reference.infer(feed)
        for mine, theirs in zip(folder.output_names, reference.output_names):
            assert a[mine].shape == b[theirs].shape
            assert np.abs(a[mine] - b[theirs]).max() <= 1e-3


def test_converting_twice_is_byte_identical(tmp_path, small_checkpoints):
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        convert_checkpoint(small_checkpoints["plus"], legacy_head=True, output=out, verify=False)
        outputs.append(out)
    for name in ("model.param", "model.bin", "model.json"):
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name


def test_reshapes_keep_the_input_size_out(plus_folder):
    lines = [line.split() for line in (plus_folder / "model.param").read_text().splitlines()]
    reshapes = [line for line in lines if line and line[0] == "Reshape"]
    assert len(reshapes) >= 6 and all("0=-1" in line for line in reshapes)


@pytest.mark.parametrize("stage", ["onnx-export", "onnxsim", "pnnx", "lint", "write"])
def test_a_failing_stage_leaves_nothing_behind(tmp_path, monkeypatch, small_checkpoints, stage):
    def boom(*args, **kwargs):
        raise StageError(stage, "injected failure")

    target = {"onnx-export": "export_onnx", "onnxsim": "simplify_onnx", "pnnx": "run_pnnx",
              "lint": "_lint", "write": "write_manifest"}[stage]
    monkeypatch.setattr(pipeline, target, boom)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(small_checkpoints["plus"]), "--legacy-head", "-o",
                                       str(out), "-q"])
    assert result.exit_code == 2
    assert f"{stage}: injected failure" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_amax_over_channels_is_caught_by_the_lint(tmp_path, monkeypatch, small_checkpoints):
    """torch.amax exports to a Reduction the firmware's ncnn reads on the wrong axis."""

    class AmaxLayout(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            outs = []
            for cls, dis in self.model(x)[:3]:
                best = torch.sigmoid(cls).amax(1, keepdim=True)
                outs += [best.reshape(1, 1, -1).permute(0, 2, 1),
                         dis.reshape(1, dis.shape[1], -1).permute(0, 2, 1)]
            return tuple(outs)

    def plan(loaded, legacy_head, stride64):
        return pipeline.ExportPlan(AmaxLayout(loaded.model), "legacy", "input.1",
                                   legacy_output_names(), {"strategy": "amax", "detail": "x"})

    monkeypatch.setattr(pipeline, "plan_export", plan)
    result = CliRunner().invoke(main, [str(small_checkpoints["plus"]), "--legacy-head", "-o",
                                       str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert "lint" in result.stderr and "Reduction" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_pnnx_failure_names_stage_and_log(tmp_path, monkeypatch, small_checkpoints):
    monkeypatch.setattr("convert.stages.pnnx_executable", lambda: "false")
    result = CliRunner().invoke(main, [str(small_checkpoints["legacy"]), "-o",
                                       str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert "pnnx: pnnx failed" in result.stderr and "log: " in result.stderr
    log = result.stderr.split("log: ")[1].rstrip(")\n")
    assert "false" in Path(log).read_text()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--input-size", "320x250"], "multiples of 32"),
    (["--input-size", "big"], "is not WxH"),
    (["-o", "/proc/nanodet-out"], "not writable"),
])
def test_bad_options(small_checkpoints, args, message):
    result = CliRunner().invoke(main, [str(small_checkpoints["legacy"]), "-q", *args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_native_plus_layout_for_modern_consumers(tmp_path):
    out = tmp_path / "native"
    result = convert_checkpoint(PLUS_PTH, output=out, target="ncnn-latest", frames=FRAMES[:8])
    assert result.manifest["layout"] == "plus-native" and result.exit_code == 0
    assert not (out / "model.json").exists()
    assert "Input                    data" in (out / "model.param").read_text()


def test_summary_prints_class_and_image_names_as_text(tmp_path):
    """Names from the user's files are never read as rich markup (a `[/]` class name)."""
    from rich.console import Console

    from convert.cli import print_summary
    from convert.pipeline import ConvertResult
    from convert.verify import VerifyResult

    odd = {"image": "[bold]photo.jpg", "score": 0.5, "class": "[/]", "box": [0, 0, 1, 1],
           "borderline": False}
    check = VerifyResult(images=1, reference_detections=1, missing=[odd], extra=[odd])
    manifest = {"architecture": {"head": {"kind": "NanoDetHead"}, "class_names": ["[/]"]},
                "layout": "legacy", "input": {"name": "input.1", "width": 320, "height": 256},
                "rewrite": {"strategy": "none", "detail": "none"}, "target": "unitv2",
                "weights": "fp16", "files": {"model.param": "0"}}
    console = Console(record=True, width=200)
    print_summary(console, ConvertResult(tmp_path, manifest, check, notes=["[red]note"]))
    text = console.export_text()
    assert "missing [/] 0.5 in [bold]photo.jpg" in text and "[red]note" in text
