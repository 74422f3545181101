"""The stages of a conversion, each a runner plus the decode its layout needs.

Order matters: a failure is blamed on the first stage that fails.
torch (the checkpoint's own head, the reference) -> torch-legacy (the export
wrapper in PyTorch) -> onnx -> onnx-sim -> ncnn -> ncnn-fp16 -> device (the
camera frame through the firmware's own preprocessing, model.json and decode).
Each is a descriptor in `STAGES` (parity.stage_registry) with its factory here;
adding a stage = a factory and one `STAGES.register` line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import InputError, StageError
from heads.decode import Detections, LevelOutput
from heads.loader import LoadedModel
from heads.rewrites import read_rewrite
from parity.detect import legacy_layout_detections, native_detections, split_native_output
from parity.layouts import Layout
from parity.model_folder import FIRMWARE_JSON, MANIFEST, ModelFolder
from parity.preprocess import SharedInput
from parity.report_types import StageRow
from parity.runners.base import Runner
from parity.runners.ncnn_runner import NcnnRunner, param_blobs
from parity.runners.onnx_runner import OnnxRunner
from parity.runners.torch_runner import NativeTorchRunner, SharedForward, TorchRunner
from parity.stage_registry import (
    DEVICE_INPUT,
    JSON_LINES,
    StageDescriptor,
    StageRegistry,
)
from parity.targets import Device
from parity.targets.unitv2 import UNITV2
from parity.tensor_stats import same_bits
from parity.unitv2.geometry import Letterbox

COMPARE_MIN_SCORE = 0.1  # detections are compared down to here, in bands


@dataclass
class StageRun:
    outputs: dict[str, np.ndarray]
    detections: Detections
    input_sha256: str
    input_max_diff: float | None = None  # device: its own input against the shared tensor
    json_lines: list[str] = field(default_factory=list)  # device: what it would print


@dataclass
class Stage:
    """A built stage: its descriptor, the layout it runs in, and its runner (None: skipped)."""

    descriptor: StageDescriptor
    layout: Layout
    runner: Runner | None = None
    skipped: str | None = None  # why it does not run
    output_names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.descriptor.name

    def table_row(self) -> StageRow:
        """The row of the report's stage table."""
        return self.descriptor.table_row(self.layout, self.skipped if self.runner is None
                                         else None)

    def run(self, frame: np.ndarray, feed: np.ndarray, box: Letterbox,
            context: StageContext, shared: SharedInput) -> StageRun:
        """`feed` is this stage's own copy of `shared.tensor`."""
        outputs = self.runner.infer(feed)
        return StageRun(outputs, context.decode(self.layout, outputs, self.output_names, box),
                        shared.sha256_of(feed))


@dataclass
class StageContext:
    """What decoding needs to know about the model."""

    num_classes: int
    strides: tuple[int, ...]
    centre_offset: float
    class_names: list[str]
    # the last decode, reused when the next stage gives the very same bits (onnx and
    # onnx-sim usually do: ONNX Runtime optimises both to one graph)
    _last: tuple | None = field(default=None, repr=False)

    def decode(self, layout: str, outputs: dict[str, np.ndarray], names: list[str],
               box: Letterbox) -> Detections:
        if self._last is not None:
            last_layout, last_names, last_box, last_outputs, detections = self._last
            if (last_layout, last_names, last_box) == (layout, names, box) and all(
                    same_bits(outputs[n], last_outputs[n]) for n in names):
                return detections
        detections = self._decode(layout, outputs, names, box)
        self._last = (layout, list(names), box, {n: outputs[n] for n in names}, detections)
        return detections

    def _decode(self, layout: str, outputs: dict[str, np.ndarray], names: list[str],
                box: Letterbox) -> Detections:
        if Layout(layout) is Layout.LEGACY:
            return legacy_layout_detections(outputs, names, box, COMPARE_MIN_SCORE)
        if Layout(layout) is Layout.PLUS_NATIVE:
            levels = split_native_output(outputs[names[0]], self.num_classes, box.net_w,
                                         box.net_h, self.strides)
            return native_detections(levels, self.centre_offset, box, COMPARE_MIN_SCORE)
        levels = [LevelOutput(outputs[f"cls{i}"], outputs[f"dis{i}"],
                              math.ceil(box.net_h / s), math.ceil(box.net_w / s), s)
                  for i, s in enumerate(self.strides)]
        return native_detections(levels, self.centre_offset, box, COMPARE_MIN_SCORE)


@dataclass
class DeviceStage(Stage):
    """The UnitV2's path: ncnn preprocessing of the frame, model.json names, firmware decode.

    `output_names` are the blobs model.json names; `role_names` the converter's
    names at the same positions, so its tensors compare with the ncnn stage's.
    """

    role_names: list[str] = field(default_factory=list)
    device: Device = UNITV2.device  # whose firmware is emulated

    def run(self, frame: np.ndarray, feed: np.ndarray, box: Letterbox,
            context: StageContext, shared: SharedInput) -> StageRun:
        device = self.device
        device_box = device.letterbox(frame.shape[1], frame.shape[0])
        device_input = np.array(device.preprocess_ncnn(frame, device_box), copy=True)[None]
        outputs = self.runner.infer(device_input)
        names = self.output_names
        shown = device.decode([outputs[n] for n in names[0::2]],
                              [outputs[n] for n in names[1::2]], device_box)
        line = device.json_line(shown, context.class_names)
        same_shape = device_input.shape == feed.shape
        return StageRun(
            outputs={role: outputs[name] for role, name in zip(self.role_names, names)},
            detections=legacy_layout_detections(outputs, names, device_box,
                                                COMPARE_MIN_SCORE, device=device),
            input_sha256=shared.sha256_of(device_input),
            input_max_diff=float(np.abs(device_input - feed).max()) if same_shape
            else float("inf"),
            json_lines=[line] if line is not None else [])


def _check_compatible(loaded: LoadedModel, folder: ModelFolder) -> None:
    """The folder must come from a model of this architecture and class count."""
    spec = loaded.spec
    if folder.firmware_json is not None and \
            folder.firmware_json["numOfClass"] != spec.head.num_classes:
        raise InputError(folder.path / FIRMWARE_JSON,
                         f"numOfClass {folder.firmware_json['numOfClass']} but the checkpoint "
                         f"has {spec.head.num_classes} classes: a folder of another model?")
    made_from = folder.manifest.get("architecture", {})
    expected = json.loads(json.dumps(spec.architecture()))  # tuples as JSON lists
    for part in ("backbone", "neck", "head"):
        if made_from.get(part) != expected[part]:
            raise InputError(folder.path / "manifest.json",
                             f"the folder was made from another architecture ({part} differs "
                             "from the checkpoint's)")


def _export_wrapper(loaded: LoadedModel, folder: ModelFolder):
    """The export wrapper of the rewrite strategy the folder's manifest records."""
    strategy = read_rewrite(folder.manifest, folder.path / MANIFEST, loaded.spec)
    return strategy.wrapper(loaded.model)


@dataclass
class StageInputs:
    """What a stage factory builds from: the loaded checkpoint and the model folder."""

    loaded: LoadedModel
    folder: ModelFolder
    forward: SharedForward  # the checkpoint's forward pass, shared by the torch stages

    @property
    def layout(self) -> Layout:
        return Layout(self.folder.layout)

    @property
    def names(self) -> list[str]:
        """The converter's output blob names, in the layout's order."""
        return self.folder.output_names_of_manifest


def ran(descriptor: StageDescriptor, inputs: StageInputs, runner: Runner) -> Stage:
    """A stage that runs `runner` in the descriptor's layout (default: the folder's)."""
    return Stage(descriptor, descriptor.layout or inputs.layout, runner,
                 output_names=list(runner.output_names))


def skipped(descriptor: StageDescriptor, inputs: StageInputs, reason: str) -> Stage:
    """A stage that does not run, and why."""
    return Stage(descriptor, descriptor.layout or inputs.layout, skipped=reason)


def torch_stage(descriptor: StageDescriptor, inputs: StageInputs) -> Stage:
    """The checkpoint's own head and decode."""
    return ran(descriptor, inputs, NativeTorchRunner(inputs.forward, descriptor.name))


def torch_export_stage(descriptor: StageDescriptor, inputs: StageInputs) -> Stage:
    """The export wrapper the converter traced, in PyTorch."""
    wrapper = _export_wrapper(inputs.loaded, inputs.folder)
    return ran(descriptor, inputs, TorchRunner(wrapper, inputs.names, inputs.forward,
                                               descriptor.name))


def onnx_stage(descriptor: StageDescriptor, inputs: StageInputs) -> Stage:
    """model.onnx in ONNX Runtime."""
    return _onnx_file_stage(descriptor, inputs, inputs.folder.onnx)


def onnx_sim_stage(descriptor: StageDescriptor, inputs: StageInputs) -> Stage:
    """model.sim.onnx (simplified) in ONNX Runtime."""
    return _onnx_file_stage(descriptor, inputs, inputs.folder.sim_onnx)


def _onnx_file_stage(descriptor: StageDescriptor, inputs: StageInputs, path: Path) -> Stage:
    if not path.is_file():
        return skipped(descriptor, inputs, f"{path.name} absent")
    return ran(descriptor, inputs, OnnxRunner(path, inputs.folder.input_name, inputs.names,
                                              descriptor.name))


def ncnn_stage(descriptor: StageDescriptor, inputs: StageInputs) -> Stage:
    """The converted .param/.bin in pip ncnn."""
    folder = inputs.folder
    return ran(descriptor, inputs, NcnnRunner(folder.param, folder.bin, folder.input_name,
                                              inputs.names, descriptor.name))


def ncnn_fp16_stage(descriptor: StageDescriptor, inputs: StageInputs) -> Stage:
    """The ncnn files with fp16 storage, as an ARM build runs them."""
    from parity.runners.ncnn_fp16 import Fp16CastNcnnRunner

    folder = inputs.folder
    return ran(descriptor, inputs, Fp16CastNcnnRunner(folder.param, folder.bin,
                                                      folder.input_name, inputs.names,
                                                      descriptor.name))


def device_stage(descriptor: StageDescriptor, inputs: StageInputs) -> Stage:
    """The camera frame through the firmware's preprocessing, model.json names and decode."""
    folder = inputs.folder
    if folder.firmware_json is None or inputs.layout is not Layout.LEGACY:
        return skipped(descriptor, inputs, "no model.json: not a UnitV2 folder")
    # a folder for a target without a device but with a model.json is run as a UnitV2's when
    # it could be one; a device target's folder always runs (a wrong size is its failure)
    device = folder.target.device or UNITV2.device
    if folder.target.device is None and folder.input_size != device.net_size:
        width, height = device.net_size
        return skipped(descriptor, inputs, f"made for {folder.target.name} at "
                       f"{folder.input_size[0]}x{folder.input_size[1]}; the {device.name} "
                       f"firmware feeds {width}x{height}")
    device_names = folder.output_names
    known = param_blobs(folder.device_param)
    for blob in device_names:
        if blob not in known:
            raise InputError(folder.path / FIRMWARE_JSON,
                             f"names blob {blob!r} that {folder.device_param.name} lacks")
    runner = NcnnRunner(folder.device_param, folder.device_bin, folder.input_name, device_names,
                        descriptor.name)
    return DeviceStage(descriptor, inputs.layout, runner, output_names=device_names,
                       role_names=inputs.names, device=device)


STAGES = StageRegistry()
for _descriptor in (
        StageDescriptor("torch", 0, torch_stage, layout=Layout.NATIVE, reference=True,
                        colour="#4e79a7"),
        StageDescriptor("torch-legacy", 10, torch_export_stage, colour="#76b7b2"),
        StageDescriptor("onnx", 20, onnx_stage, ("torch-legacy",), colour="#59a14f"),
        StageDescriptor("onnx-sim", 30, onnx_sim_stage, ("onnx", "torch-legacy"),
                        colour="#edc948"),
        StageDescriptor("ncnn", 40, ncnn_stage, ("onnx-sim", "onnx", "torch-legacy"),
                        colour="#f28e2b"),
        # ncnn-fp16 and device both run the ncnn files
        StageDescriptor("ncnn-fp16", 50, ncnn_fp16_stage, ("ncnn",), colour="#ff5cc8"),
        StageDescriptor("device", 60, device_stage, ("ncnn",),
                        checks=(DEVICE_INPUT, JSON_LINES), colour="#a66bff")):
    STAGES.register(_descriptor)


def build_stages(loaded: LoadedModel, folder: ModelFolder, only: set[str] | None = None,
                 freeze_torch: bool = False, registry: StageRegistry = STAGES
                 ) -> tuple[list[Stage], StageContext]:
    """Every registered stage in order; those that cannot run are marked skipped.

    `only` keeps these stages (and the reference) running. `freeze_torch` runs the
    checkpoint frozen to TorchScript (same bits, faster on long runs; see
    `SharedForward`)."""
    _check_compatible(loaded, folder)
    spec = loaded.spec
    context = StageContext(spec.head.num_classes, spec.head.strides, spec.head.centre_offset,
                           folder.class_names)
    try:
        registry.reference()
    except ValueError as exc:
        raise StageError("stages", str(exc)) from None
    inputs = StageInputs(loaded, folder, SharedForward(loaded.model, frozen=freeze_torch))
    stages = [descriptor.build(descriptor, inputs) for descriptor in registry]
    for stage in stages:
        if only is not None and stage.name not in only and not stage.descriptor.reference:
            stage.runner, stage.skipped = None, stage.skipped or "not selected"
    return stages, context
