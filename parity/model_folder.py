"""The model folder contract: what `convert` writes and `parity` reads.

A folder holds `model.param` + `model.bin` (NCNN), `model.onnx` (raw export)
and `model.sim.onnx` (after onnxsim), `manifest.json` (how it was made) and,
for the legacy layout, `model.json` exactly as the target's firmware reads it
(the target's `model_json` format; parity/unitv2/model_json.py for the UnitV2).

`read_model_folder` checks both JSON files (the manifest against the shape below,
model.json against the format of the manifest's target; every key parity reads,
with its type and range; errors name the key path), requires model.json when the
manifest says the folder is for a device (a target with firmware, legacy layout),
and requires every file it reads, including those model.json
names, to be a regular file in the folder itself (no path, no link leading out).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import InputError
from heads.untrusted import nonblocking, regular_only
from parity.json_shape import (
    ShapeError,
    boolean,
    conform,
    integer,
    list_of,
    obj,
    refine,
    string,
)
from parity.targets import TARGETS, Target, target_named
from parity.targets.base import LEGACY_NANODET_BLOBS

PARAM_FILE = "model.param"
BIN_FILE = "model.bin"
ONNX_FILE = "model.onnx"
SIM_ONNX_FILE = "model.sim.onnx"
FIRMWARE_JSON = "model.json"
MANIFEST = "manifest.json"


LAYOUTS = ("legacy", "plus-native")
OUTPUT_COUNTS = {"legacy": len(LEGACY_NANODET_BLOBS.outputs()), "plus-native": 1}
MAX_INPUT_SIDE = 4096  # pixels; a larger net input would need gigabytes per stage


def _manifest_rule(manifest: dict[str, Any], at: str) -> None:
    layout, outputs = manifest["layout"], manifest["outputs"]
    if len(outputs) != OUTPUT_COUNTS[layout]:
        raise ShapeError("outputs", f"the {layout} layout has {OUTPUT_COUNTS[layout]} output "
                         f"blobs, not {len(outputs)}")
    if len(set(outputs)) != len(outputs):
        raise ShapeError("outputs", "names a blob twice")
    rewrite = manifest["rewrite"]
    if rewrite["strategy"] == "plus-to-legacy":
        if layout != "legacy":
            raise ShapeError("rewrite.strategy", f"plus-to-legacy but the layout is {layout}")
        obj({"stride64": string(("fold", "drop")),
             "centre_compensation": boolean()})(rewrite, "rewrite")


def _registered_target(value: Any, at: str) -> str:
    """A target name of the registry as it is now (a test may register more)."""
    return string(tuple(TARGETS))(value, at)


_SIDE = integer(minimum=32, maximum=MAX_INPUT_SIDE, multiple_of=32)
MANIFEST_SHAPE = refine(obj({
    "layout": string(LAYOUTS),
    "input": obj({"name": string(nonempty=True), "width": _SIDE, "height": _SIDE}),
    "outputs": list_of(string(nonempty=True), min_items=1),
    "architecture": obj({"backbone": obj({}), "neck": obj({}), "head": obj({}),
                         "class_names": list_of(string(), min_items=1)}),
    "rewrite": obj({"strategy": string(("none", "plus-to-legacy"))}),
    "target": _registered_target,
}), _manifest_rule)


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    manifest: dict[str, Any]
    firmware_json: dict[str, Any] | None

    @property
    def param(self) -> Path:
        return self.path / PARAM_FILE

    @property
    def bin(self) -> Path:
        return self.path / BIN_FILE

    @property
    def device_param(self) -> Path:
        """The .param the device loads: model.json's modelParamName (a file of this folder)."""
        if self.firmware_json is None:
            return self.param
        return self.path / self.firmware_json["modelParamName"]

    @property
    def device_bin(self) -> Path:
        """The .bin the device loads: model.json's modelBinName (a file of this folder)."""
        if self.firmware_json is None:
            return self.bin
        return self.path / self.firmware_json["modelBinName"]

    @property
    def onnx(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def sim_onnx(self) -> Path:
        return self.path / SIM_ONNX_FILE

    @property
    def target(self) -> Target:
        """The consumer the folder was converted for (manifest ``target``)."""
        return target_named(self.manifest["target"], str(self.path / MANIFEST))

    @property
    def layout(self) -> str:
        return self.manifest["layout"]

    @property
    def input_name(self) -> str:
        return self.manifest["input"]["name"]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest["input"]["width"], self.manifest["input"]["height"]

    @property
    def output_names(self) -> list[str]:
        """Blob names; for the legacy layout as model.json gives them (what the device uses:
        the firmware reads the first three output nodes)."""
        if self.firmware_json is not None:
            return self.target.model_json.output_names(self.firmware_json)
        return list(self.manifest["outputs"])

    @property
    def output_names_of_manifest(self) -> list[str]:
        """Blob names as the converter wrote them (model.json may say otherwise)."""
        return list(self.manifest["outputs"])

    @property
    def class_names(self) -> list[str]:
        if self.firmware_json is not None:
            return list(self.firmware_json["className"])
        return list(self.manifest["architecture"]["class_names"])


def read_json_object(path: Path, missing: str = "missing from the model folder"
                     ) -> dict[str, Any]:
    """A JSON file holding an object, or a one-line InputError naming it (a FIFO, device or
    folder is refused unread)."""
    try:
        with open(path, "rb", opener=nonblocking) as handle:
            data = json.loads(regular_only(handle, path, "JSON").read())
    except FileNotFoundError:
        raise InputError(path, missing) from None
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, digits
        raise InputError(path, f"not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "must hold a JSON object")
    return data


def folder_file(folder: Path, name: str, named_by: Path | None = None,
                key: str | None = None) -> Path:
    """`folder / name`: a regular file that lies in the folder itself, or an InputError.

    `named_by` / `key`: the file and key that gave `name` (model.json's names).
    """
    blame = named_by or folder / name
    what = f"{key}: {name!r} " if key else ""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise InputError(blame, f"{what}is not the name of a file in the model folder itself")
    path = folder / name
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(folder):
        raise InputError(blame, f"{what}is a link leading out of the model folder")
    try:
        is_file = path.is_file()
    except OSError as exc:
        raise InputError(blame, f"{what}cannot be read: {exc.strerror or exc}") from None
    if not is_file:
        raise InputError(blame, f"{what}missing from the model folder" if not key
                         else f"{what}is not a file in the model folder")
    return path


def read_model_folder(path: str | Path) -> ModelFolder:
    """The folder's manifest and model.json, checked as parity and the device read them."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "not a model folder (no such directory)")
    manifest_path = folder_file(path, MANIFEST)
    manifest = conform(manifest_path, read_json_object(manifest_path), MANIFEST_SHAPE)
    target = target_named(manifest["target"], str(manifest_path))
    firmware = None
    if os.path.lexists(path / FIRMWARE_JSON):
        firmware_path = folder_file(path, FIRMWARE_JSON)
        firmware = target.model_json.read(firmware_path, read_json_object(firmware_path))
    elif target.device is not None and manifest["layout"] == "legacy":
        raise InputError(path / FIRMWARE_JSON, "missing: manifest.json says the folder is for "
                         f"the {target.device.name} (target {target.name}, legacy layout), "
                         "whose firmware reads it")
    for needed in (PARAM_FILE, BIN_FILE):
        folder_file(path, needed)
    if firmware is not None:  # the files the device loads
        for key in ("modelParamName", "modelBinName"):
            folder_file(path, firmware[key], path / FIRMWARE_JSON, key)
    return ModelFolder(path=path, manifest=manifest, firmware_json=firmware)
