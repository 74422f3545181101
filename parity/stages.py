"""The stages of a conversion, each a runner plus the decode its layout needs.

Order matters: a failure is blamed on the first stage that fails.
torch (the checkpoint's own head, the reference) -> torch-legacy (the export
wrapper in PyTorch) -> onnx -> onnx-sim -> ncnn -> ncnn-fp16 -> device (the
camera frame through the firmware's own preprocessing, model.json and decode).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from common.errors import InputError
from heads.decode import Detections, LevelOutput
from heads.export import LegacyLayout, PlusNativeLayout
from heads.loader import LoadedModel
from heads.plus_to_legacy import PlusToLegacy
from parity.detect import legacy_layout_detections, native_detections, split_native_output
from parity.model_folder import FIRMWARE_JSON, ModelFolder
from parity.preprocess import SharedInput
from parity.runners.base import Runner
from parity.runners.ncnn_runner import NcnnRunner, param_blobs
from parity.runners.onnx_runner import OnnxRunner
from parity.runners.torch_runner import NativeTorchRunner, SharedForward, TorchRunner
from parity.tensor_stats import same_bits
from parity.unitv2 import (
    Letterbox,
    decode_levels,
    json_line,
    letterbox_for,
    preprocess_frame_ncnn,
)

STAGE_ORDER = ("torch", "torch-legacy", "onnx", "onnx-sim", "ncnn", "ncnn-fp16", "device")
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
    name: str
    layout: str  # "native", "legacy" or "plus-native": which stages compare tensor to tensor
    runner: Runner | None = None
    skipped: str | None = None  # why it does not run
    output_names: list[str] = field(default_factory=list)

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
        if layout == "legacy":
            return legacy_layout_detections(outputs, names, box, COMPARE_MIN_SCORE)
        if layout == "plus-native":
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

    def run(self, frame: np.ndarray, feed: np.ndarray, box: Letterbox,
            context: StageContext, shared: SharedInput) -> StageRun:
        device_box = letterbox_for(frame.shape[1], frame.shape[0])
        device_input = np.array(preprocess_frame_ncnn(frame, device_box), copy=True)[None]
        outputs = self.runner.infer(device_input)
        names = self.output_names
        shown = decode_levels([outputs[n] for n in names[0::2]],
                              [outputs[n] for n in names[1::2]], device_box)
        line = json_line(shown, context.class_names)
        same_shape = device_input.shape == feed.shape
        return StageRun(
            outputs={role: outputs[name] for role, name in zip(self.role_names, names)},
            detections=legacy_layout_detections(outputs, names, device_box,
                                                COMPARE_MIN_SCORE),
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
    if folder.layout == "plus-native":
        return PlusNativeLayout(loaded.model)
    if not loaded.spec.is_plus:
        return LegacyLayout(loaded.model)
    rewrite = folder.manifest.get("rewrite", {})
    return PlusToLegacy(loaded.model, stride64=rewrite.get("stride64", "fold"),
                        compensate=rewrite.get("centre_compensation", True))


def build_stages(loaded: LoadedModel, folder: ModelFolder, only: set[str] | None = None,
                 freeze_torch: bool = False) -> tuple[list[Stage], StageContext]:
    """Every stage in order; those whose files are absent are marked skipped.

    `freeze_torch` runs the checkpoint frozen to TorchScript (same bits, faster on
    long runs; see `SharedForward`)."""
    from parity.runners.ncnn_fp16 import Fp16CastNcnnRunner

    _check_compatible(loaded, folder)
    spec = loaded.spec
    context = StageContext(spec.head.num_classes, spec.head.strides, spec.head.centre_offset,
                           folder.class_names)
    names, layout = folder.output_names_of_manifest, folder.layout
    forward = SharedForward(loaded.model, frozen=freeze_torch)
    native = NativeTorchRunner(forward)
    stages = [Stage("torch", "native", native, output_names=native.output_names),
              Stage("torch-legacy", layout,
                    TorchRunner(_export_wrapper(loaded, folder), names, forward),
                    output_names=names)]
    for name, path in (("onnx", folder.onnx), ("onnx-sim", folder.sim_onnx)):
        if path.is_file():
            stages.append(Stage(name, layout, OnnxRunner(path, folder.input_name, names, name),
                                output_names=names))
        else:
            stages.append(Stage(name, layout, skipped=f"{path.name} absent"))
    stages.append(Stage("ncnn", layout, NcnnRunner(folder.param, folder.bin, folder.input_name,
                                                   names), output_names=names))
    stages.append(Stage("ncnn-fp16", layout,
                        Fp16CastNcnnRunner(folder.param, folder.bin, folder.input_name, names),
                        output_names=names))
    if folder.firmware_json is None or layout != "legacy":
        stages.append(Stage("device", layout, skipped="no model.json: not a UnitV2 folder"))
    else:
        device_names = folder.output_names
        known = param_blobs(folder.device_param)
        for blob in device_names:
            if blob not in known:
                raise InputError(folder.path / FIRMWARE_JSON,
                                 f"names blob {blob!r} that {folder.device_param.name} lacks")
        stages.append(DeviceStage("device", layout,
                                  NcnnRunner(folder.device_param, folder.device_bin,
                                             folder.input_name, device_names, "device"),
                                  output_names=device_names, role_names=names))
    for stage in stages:
        if only is not None and stage.name not in only and stage.name != "torch":
            stage.runner, stage.skipped = None, stage.skipped or "not selected"
    return stages, context
