"""`convert` end to end: real checkpoints through ONNX, onnxsim, pnnx, lint and verify."""

from __future__ import annotations

import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from common.errors import StageError
from convert import ConvertOptions, convert_checkpoint, convert_model
from convert.cli import main
from convert.plan import choose_rewrite, plan
from convert.verify import verify_folder
from heads.loader import load_detector
from heads.rewrites import LegacyAsIs, PlusNativeAsIs, PlusToLegacyRewrite
from parity.model_folder import read_model_folder
from parity.preprocess import frame_to_tensor
from parity.runners.ncnn_runner import NcnnRunner
from parity.synthetic import default_frames
from parity.targets.unitv2 import UNITV2
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
    assert manifest["tool"]["libraries"]["torch"] == importlib.metadata.version("torch")
    assert (plus_folder.parent / "plus-unitv2.tar.gz").is_file()


def test_plus_ncnn_firmware_decode_equals_native_plus(plus_folder):
    loaded = load_detector(PLUS_PTH, PLUS_CFG)
    folder = read_model_folder(plus_folder)
    assert folder.layout == "legacy"
    result = verify_folder(loaded, plus_folder, FRAMES, (320, 256), "legacy", PLUS_CFG)
    assert result.passed, result.failing_checks
    assert result.band.reference > 100
    assert result.band.matched_fraction >= 0.99, result.missing
    assert not result.extra
    assert result.stride64_only > 0  # the photos do exercise the stride-64 level


def test_naive_rewrite_fails_verification(tmp_path):
    """Slicing Plus outputs as they are (no centre shift, stride 64 dropped) must fail."""
    out = tmp_path / "naive"
    naive = PlusToLegacyRewrite("drop", centre_compensation=False)
    result = convert_model(PLUS_PTH, ConvertOptions(legacy_head=True, output=out,
                                                    frames=FRAMES[:12]), rewrite=naive)
    assert result.exit_code == 1
    failing = {c["check"] for c in result.verification.failing_checks}
    assert "detections.min_iou" in failing  # boxes half a stride off
    assert result.verification.band.min_iou < 0.6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["status"] == "failed"
    assert manifest["rewrite"]["centre_compensation"] is False  # the folder says what it holds


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


def test_reshapes_keep_the_input_size_out_but_on_the_fold_grids(plus_folder):
    """Reshapes infer the cell count (0=-1), except on the stride-64 fold's path: its
    softmax views return to the stride-32 and stride-64 grids, whose sizes (like the
    parity its transposed convolutions assume) are the export's."""
    lines = [line.split() for line in (plus_folder / "model.param").read_text().splitlines()]
    reshapes = [line for line in lines if line and line[0] == "Reshape"]
    manifest = json.loads((plus_folder / "manifest.json").read_text())
    width, height = manifest["input"]["width"], manifest["input"]["height"]
    fold_widths = {width // 32, width // 64, (width // 64) * (height // 64)}
    baked = [line for line in reshapes if "0=-1" not in line]
    assert len(reshapes) >= 6 and len(baked) == 3
    assert {int(next(p for p in line if p.startswith("0="))[2:]) for line in baked} == fold_widths


def test_the_fold_places_cells_with_depthwise_deconvolutions_only(plus_folder):
    """A full Deconvolution runs through current ncnn's matrix multiply, whose fixed cost
    on a few cells was 1.5-2.5 % of the whole seeded NanoDet-Plus-m 320 (README,
    Architectures); the fold's placements are depthwise."""
    types = [line.split()[0] for line in (plus_folder / "model.param").read_text()
             .splitlines()[2:]]
    assert "Deconvolution" not in types and types.count("DeconvolutionDepthWise") == 2


def fail_when(reported: str, error: BaseException):
    """A `report` for convert that raises `error` on the line holding `reported`."""

    def report(line: str) -> None:
        if reported in line:
            raise error

    return report


@pytest.mark.parametrize("stage", ["onnx-export", "onnxsim", "pnnx", "lint", "write"])
def test_a_failing_stage_leaves_nothing_behind(tmp_path, small_checkpoints, stage):
    """The failure comes when the stage's work is done, its files written."""
    out = tmp_path / "out"
    failing = fail_when(f" {stage} done", StageError(stage, "injected failure"))
    with pytest.raises(StageError) as error:
        convert_checkpoint(small_checkpoints["plus"], legacy_head=True, output=out,
                           report=failing)
    assert str(error.value) == f"{stage}: injected failure"
    assert list(tmp_path.iterdir()) == []


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


@dataclass(frozen=True)
class AmaxRewrite(PlusToLegacyRewrite):
    """The Plus-to-legacy strategy, exporting the class maximum with torch.amax."""

    def wrapper(self, model):
        return AmaxLayout(model)


def test_amax_over_channels_is_caught_by_the_lint(tmp_path, small_checkpoints):
    """torch.amax exports to a Reduction the firmware's ncnn reads on the wrong axis."""
    options = ConvertOptions(legacy_head=True, output=tmp_path / "out")
    with pytest.raises(StageError) as error:
        convert_model(small_checkpoints["plus"], options, rewrite=AmaxRewrite())
    assert error.value.where == "lint" and "Reduction" in error.value.problem
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def failing_pnnx(tmp_path, monkeypatch) -> Path:
    """A `pnnx` first on PATH that says why and fails."""
    tools = tmp_path / "tools"
    tools.mkdir()
    fake = tools / "pnnx"
    fake.write_text("#!/bin/sh\necho 'fake pnnx: no conversion today' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    return fake


def test_pnnx_failure_names_stage_and_log(tmp_path, failing_pnnx, small_checkpoints):
    result = CliRunner().invoke(main, [str(small_checkpoints["legacy"]), "-o",
                                       str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert "pnnx: pnnx failed with exit code 3" in result.stderr and "log: " in result.stderr
    log = result.stderr.split("log: ")[1].rstrip(")\n")
    assert f"$ {failing_pnnx} " in Path(log).read_text()
    assert "fake pnnx: no conversion today" in Path(log).read_text()
    assert not (tmp_path / "out").exists()
    Path(log).unlink()


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
    odd = {"image": "[bold]photo.jpg", "score": 0.5, "class": "[/]", "box": [0, 0, 1, 1]}
    check = SimpleNamespace(passed=False, summary=lambda: "1 missing", missing=[odd],
                            extra=[odd], stride64_only=3, reference_detections=60,
                            residuals={"clamped": 1, "competing": 2})
    manifest = {"architecture": {"head": {"kind": "NanoDetHead"}, "class_names": ["[/]"]},
                "layout": "legacy", "input": {"name": "input.1", "width": 320, "height": 256},
                "rewrite": {"strategy": "none", "detail": "none"}, "target": "unitv2",
                "weights": "fp16", "files": {"model.param": "0"}}
    console = Console(record=True, width=200)
    print_summary(console, ConvertResult(tmp_path, manifest, check, LegacyAsIs(),
                                         notes=["[red]note"]))
    text = console.export_text()
    assert "missing [/] 0.5 in [bold]photo.jpg" in text and "[red]note" in text


@pytest.mark.parametrize("legacy_head, stride64, strategy", [
    (False, "fold", PlusNativeAsIs()), (True, "fold", PlusToLegacyRewrite("fold")),
    (True, "drop", PlusToLegacyRewrite("drop"))])
def test_plan_names_the_blobs_of_the_chosen_layout(small_checkpoints, legacy_head, stride64,
                                                   strategy):
    loaded = load_detector(small_checkpoints["plus"])
    chosen = choose_rewrite(loaded.spec, ConvertOptions(legacy_head=legacy_head,
                                                        stride64=stride64))
    assert chosen == strategy
    export = plan(loaded, chosen, UNITV2)
    if strategy.layout == "legacy":
        assert export.input_name == "input.1" and len(export.output_names) == 6
        assert export.level_strides == (8, 16, 32)
    else:
        assert (export.input_name, export.output_names) == ("data", ["output"])
    legacy = load_detector(small_checkpoints["legacy"])
    assert choose_rewrite(legacy.spec, ConvertOptions(legacy_head=legacy_head)) == LegacyAsIs()


@pytest.mark.parametrize("options, where", [
    ({"stride64": "sometimes"}, "--stride64"), ({"target": "k210"}, "--target"),
    ({"input_size": (320, 250)}, "--input-size")])
def test_options_are_checked_when_constructed(options, where):
    from common.errors import InputError

    with pytest.raises(InputError) as error:
        ConvertOptions(**options)
    assert error.value.where == where
