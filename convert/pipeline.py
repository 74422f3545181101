"""The conversion pipeline: checkpoint -> verified UnitV2 / NCNN model folder.

Stages: load, wrap, onnx-export, onnxsim, pnnx, lint, write, verify. Paths and
options are checked before any work (convert/outputs.py). Everything is
written into a locked partial folder beside the output and renamed into place
at the end; an error, Ctrl-C or SIGTERM at any point leaves nothing behind
(see convert/outputs.py for --force and convert/stages.py for logs).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from common.errors import EXIT_CHECK_FAILED, EXIT_OK, InputError, StageError, ToolError
from common.threads import limit_threads
from common.versions import tool_versions
from convert.ncnn_lint import lint_param
from convert.outputs import OutputPlan, Staging, plan_output, staged_output
from convert.package import (
    check_firmware_json,
    write_firmware_json,
    write_manifest,
    write_tar,
)
from convert.stages import export_onnx, run_pnnx, simplify_onnx
from convert.verify import VerifyResult, verify_folder
from heads.export import LegacyLayout, PlusNativeLayout
from heads.loader import LoadedModel, load_detector
from heads.plus_to_legacy import PlusToLegacy
from parity.model_folder import (
    BIN_FILE,
    LEGACY_INPUT,
    LEGACY_STRIDES,
    ONNX_FILE,
    PARAM_FILE,
    SIM_ONNX_FILE,
    legacy_output_names,
)
from parity.ncnn_param import Param
from parity.synthetic import default_frames
from parity.unitv2 import MEAN_BGR, NORM_BGR

Target = Literal["unitv2", "ncnn-latest"]
FIRMWARE_INPUT_SIZE = (320, 256)
MAX_INPUT_SIDE = 2048
PNNX_WORK = ".pnnx-work"  # inside the partial folder, removed before the files are listed
STAGES = ("load", "wrap", "onnx-export", "onnxsim", "pnnx", "lint", "write", "verify")


@dataclass
class ConvertResult:
    folder: Path
    manifest: dict[str, Any]
    verification: VerifyResult | None
    tar: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        failed = self.verification is not None and not self.verification.passed
        return EXIT_CHECK_FAILED if failed else EXIT_OK


def parse_input_size(text: str) -> tuple[int, int]:
    """'320x256' -> (320, 256); both multiples of 32, at most MAX_INPUT_SIDE."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError("--input-size", f"{text!r} is not WxH, e.g. 320x256") from None
    check_input_size(width, height)
    return width, height


def check_input_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise InputError("--input-size", f"{width}x{height}: width and height must be positive "
                         "multiples of 32")
    if max(width, height) > MAX_INPUT_SIDE:
        raise InputError("--input-size", f"{width}x{height}: width and height must be at most "
                         f"{MAX_INPUT_SIDE}")


@dataclass(frozen=True)
class ExportPlan:
    """What the graph computes and how its blobs are named."""

    wrapper: nn.Module
    layout: Literal["legacy", "plus-native"]
    input_name: str
    output_names: list[str]
    rewrite: dict[str, Any]


def plan_export(loaded: LoadedModel, legacy_head: bool, stride64: str) -> ExportPlan:
    spec = loaded.spec
    if not spec.is_plus:
        rewrite = {"strategy": "none",
                   "detail": "legacy NanoDet head: already the firmware's layout; only blob "
                             "names and output shapes are set"}
        return ExportPlan(LegacyLayout(loaded.model), "legacy", LEGACY_INPUT,
                          legacy_output_names(), rewrite)
    if not legacy_head:
        rewrite = {"strategy": "none", "detail": "NanoDet-Plus native layout (one output)"}
        return ExportPlan(PlusNativeLayout(loaded.model), "plus-native", "data", ["output"],
                          rewrite)
    wrapper = PlusToLegacy(loaded.model, stride64=stride64)
    rewrite = {"strategy": "plus-to-legacy", "centre_compensation": True, "stride64": stride64,
               "reg_max_out": wrapper.reg_max_out,
               "detail": "distances re-expressed from the firmware's (x+0.5)*stride centres as "
                         "two-hot bin distributions; "
                         + ("each stride-64 prediction moved to the weakest of the four "
                            "stride-32 cells around its centre, where it scores higher"
                            if stride64 == "fold" else "stride-64 level dropped")}
    return ExportPlan(wrapper, "legacy", LEGACY_INPUT, legacy_output_names(), rewrite)


class StageClock:
    """Names each stage as it runs; errors from a stage carry its name."""

    def __init__(self, report: Callable[[str], None] | None):
        self.report = report or (lambda line: None)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        number = STAGES.index(name) + 1
        self.report(f"[{number}/{len(STAGES)}] {name} ...")
        start = time.perf_counter()
        try:
            yield
        except ToolError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure in a stage is one line
            raise StageError(name, f"{type(exc).__name__}: {exc}") from None
        self.timings[name] = round(time.perf_counter() - start, 3)
        self.report(f"[{number}/{len(STAGES)}] {name} done in {self.timings[name]:.1f}s")


def convert_checkpoint(checkpoint: str | Path, *, config: str | Path | None = None,
                       class_names: str | Path | None = None, legacy_head: bool = False,
                       output: str | Path | None = None,
                       input_size: tuple[int, int] = FIRMWARE_INPUT_SIZE,
                       target: Target = "unitv2", fp16: bool = True, stride64: str = "fold",
                       tar: bool = False, force: bool = False, verify: bool = True,
                       opset: int = 11, frames: list[tuple[str, Any]] | None = None,
                       report: Callable[[str], None] | None = None) -> ConvertResult:
    """Convert a NanoDet(-Plus) checkpoint into an NCNN model folder (see README).

    Sets this process (and pnnx) to one compute thread per library (common.threads)."""
    limit_threads()
    checkpoint = Path(checkpoint)
    check_input_size(*input_size)
    if stride64 not in ("fold", "drop"):
        raise InputError("--stride64", f"{stride64!r}: choose fold or drop")
    if target not in ("unitv2", "ncnn-latest"):
        raise InputError("--target", f"{target!r}: choose unitv2 or ncnn-latest")
    destination = plan_output(
        output if output else Path.cwd() / f"{checkpoint.stem}-unitv2", force=force, tar=tar,
        inputs={"the checkpoint": checkpoint, "the --config file": config,
                "the --class-names file": class_names})
    clock = StageClock(report)
    with staged_output(destination) as staging:
        with clock.stage("load"):
            loaded = load_detector(checkpoint, config, class_names)
        with clock.stage("wrap"):
            plan = plan_export(loaded, legacy_head, stride64)
        if plan.layout == "legacy":
            check_firmware_json(class_names or config or checkpoint,
                                list(loaded.spec.class_names), plan.output_names)
        notes = _plan_notes(loaded, plan, legacy_head, target, input_size)
        manifest = _build_folder(staging.folder.path, loaded, plan, clock, input_size, target,
                                 fp16, opset, notes)
        verification = None
        if verify:
            with clock.stage("verify"):
                verification = verify_folder(loaded, staging.folder.path / PARAM_FILE,
                                             staging.folder.path / BIN_FILE, plan.layout,
                                             plan.input_name, plan.output_names, input_size,
                                             frames or default_frames())
        manifest["verification"] = (
            {"status": "passed" if verification.passed else "failed", **verification.to_dict()}
            if verification else {"status": "skipped"})
        manifest["stage_seconds"] = clock.timings
        manifest = write_manifest(staging.folder.path,
                                  {k: v for k, v in manifest.items() if k not in _STAMPED})
        _publish(staging, destination)
    return ConvertResult(destination.folder, manifest, verification, destination.archive, notes)


_STAMPED = ("manifest_version", "written_by", "files")  # write_manifest sets these


def _build_folder(folder: Path, loaded: LoadedModel, plan: ExportPlan, clock: StageClock,
                  input_size: tuple[int, int], target: Target, fp16: bool, opset: int,
                  notes: list[str]) -> dict[str, Any]:
    """Stages onnx-export to write: the model files and a first manifest in `folder`."""
    width, height = input_size
    onnx_path, sim_path = folder / ONNX_FILE, folder / SIM_ONNX_FILE
    with clock.stage("onnx-export"):
        export_onnx(plan.wrapper, onnx_path, width, height, plan.input_name,
                    plan.output_names, opset)
    with clock.stage("onnxsim"):
        simplify_onnx(onnx_path, sim_path)
    work = folder / PNNX_WORK
    try:
        with clock.stage("pnnx"):
            work.mkdir()
            param_path, bin_path = run_pnnx(sim_path, work, width, height, fp16)
            _name_blobs(param_path, plan, input_size)
            shutil.copyfile(param_path, folder / PARAM_FILE)
            shutil.copyfile(bin_path, folder / BIN_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with clock.stage("lint"):
        _lint(folder / PARAM_FILE, folder / BIN_FILE, target)
    with clock.stage("write"):
        if plan.layout == "legacy":
            write_firmware_json(folder, list(loaded.spec.class_names), plan.output_names)
        manifest = _manifest(loaded, plan, input_size, target, fp16, opset, notes)
        write_manifest(folder, manifest)
    return manifest


def _publish(staging: Staging, destination: OutputPlan) -> None:
    """The archive (--tar) from the finished folder, then both renamed into place."""
    if staging.archive is not None:
        try:
            write_tar(staging.folder.path, staging.archive.path, destination.folder.name)
        except OSError as exc:
            raise StageError("write", f"cannot write {destination.archive} "
                             f"({exc.strerror})") from None
    staging.publish()


def _name_blobs(param_path: Path, plan: ExportPlan, input_size: tuple[int, int]) -> None:
    """pnnx names blobs in0/out0...; give them the names consumers look up, and keep the
    input size out of the legacy layout's Reshapes."""
    try:
        param = Param.read(param_path)
    except InputError as exc:  # it names pnnx's temporary file, gone after this run
        raise StageError("pnnx", f"wrote a param this tool cannot read: {exc.problem}") from None
    param.rename_blob("in0", plan.input_name)
    for index, name in enumerate(plan.output_names):
        param.rename_blob(f"out{index}", name)
    if plan.layout == "legacy":
        width, height = input_size
        param.unbake_cell_counts({(width // s) * (height // s) for s in LEGACY_STRIDES})
    param.write(param_path)


def _lint(param: Path, weights: Path, target: Target) -> None:
    findings = lint_param(param, weights, target=target)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StageError("lint", f"the {target} ncnn cannot run this model: {errors[0]}{more}")


def _plan_notes(loaded: LoadedModel, plan: ExportPlan, legacy_head: bool, target: Target,
                input_size: tuple[int, int]) -> list[str]:
    notes = []
    spec = loaded.spec
    if legacy_head and not spec.is_plus:
        notes.append("legacy NanoDet head: no rewrite needed; --legacy-head only sets the "
                     "firmware's blob names and layout")
    if plan.layout != "legacy" and target == "unitv2":
        notes.append("native NanoDet-Plus layout: the UnitV2 firmware cannot decode it "
                     "(add --legacy-head for the device)")
    if target == "unitv2" and tuple(input_size) != FIRMWARE_INPUT_SIZE:
        notes.append(f"the UnitV2 firmware feeds 320x256; this model is exported at "
                     f"{input_size[0]}x{input_size[1]}")
    expected_norm = tuple(round(1 / s, 6) for s in spec.std_bgr)
    if spec.mean_bgr != MEAN_BGR or any(abs(a - b) > 2e-6 for a, b in zip(expected_norm,
                                                                           NORM_BGR)):
        notes.append(f"the model was trained with mean {spec.mean_bgr} / std {spec.std_bgr}; "
                     "the firmware normalises with NanoDet's defaults")
    return notes


def _manifest(loaded: LoadedModel, plan: ExportPlan, input_size: tuple[int, int],
              target: Target, fp16: bool, opset: int, notes: list[str]) -> dict[str, Any]:
    ckpt = loaded.checkpoint
    return {
        "tool": tool_versions(),
        "checkpoint": {"file": ckpt.path.name, "sha256": ckpt.sha256, "format": ckpt.format},
        "architecture": loaded.spec.to_dict(),
        "input": {"name": plan.input_name, "width": input_size[0], "height": input_size[1],
                  "pixel_format": "BGR", "mean": list(MEAN_BGR), "norm": list(NORM_BGR),
                  "letterbox": "long side to the net size, pad to it evenly with 0 "
                               "(before normalising)"},
        "layout": plan.layout,
        "outputs": plan.output_names,
        "rewrite": plan.rewrite,
        "target": target,
        "weights": "fp16" if fp16 else "fp32",
        "onnx_opset": opset,
        "notes": notes,
    }


__all__ = ["ConvertResult", "convert_checkpoint", "parse_input_size"]
