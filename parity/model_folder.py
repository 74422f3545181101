"""The model folder contract: what `convert` writes and `parity` reads.

A folder holds `model.param` + `model.bin` (NCNN), `model.onnx` (raw export)
and `model.sim.onnx` (after onnxsim), `manifest.json` (how it was made) and,
for the legacy layout, `model.json` exactly as the UnitV2 firmware reads it
(UnitV2Framework main/object_recognition.cpp, `loadModelConfig`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heads.errors import InputError

PARAM_FILE = "model.param"
BIN_FILE = "model.bin"
ONNX_FILE = "model.onnx"
SIM_ONNX_FILE = "model.sim.onnx"
FIRMWARE_JSON = "model.json"
MANIFEST = "manifest.json"
LEGACY_INPUT = "input.1"
LEGACY_STRIDES = (8, 16, 32)
FIRMWARE_CONFIG_POOL = 8 * 1024  # DynamicJsonDocument doc(1024 * 8) in loadModelConfig


def legacy_output_names() -> list[str]:
    """cls/dis per stride, in the order the firmware extracts them."""
    return [f"{kind}_pred_stride_{s}" for s in LEGACY_STRIDES for kind in ("cls", "dis")]


def firmware_model_json(class_names: list[str], output_names: list[str]) -> dict[str, Any]:
    nodes = [{"cls_pred": output_names[2 * i], "dis_pred": output_names[2 * i + 1]}
             for i in range(len(LEGACY_STRIDES))]
    return {"modelType": "nanodet", "modelParamName": PARAM_FILE, "modelBinName": BIN_FILE,
            "numOfClass": len(class_names), "className": list(class_names),
            "model": {"modelOutputNodes": nodes}}


def firmware_config_bytes(doc: dict[str, Any]) -> int:
    """Bytes ArduinoJson 6 (armhf) needs to parse `doc`: 24 per value slot, copied strings."""

    def walk(value: Any) -> int:
        if isinstance(value, dict):
            return sum(24 + len(k.encode()) + 1 + walk(v) for k, v in value.items())
        if isinstance(value, list):
            return sum(24 + walk(v) for v in value)
        if isinstance(value, str):
            return len(value.encode()) + 1
        return 0

    return walk(doc)


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
    def onnx(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def sim_onnx(self) -> Path:
        return self.path / SIM_ONNX_FILE

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
        """Blob names; for the legacy layout as model.json gives them (what the device uses)."""
        if self.firmware_json is not None:
            nodes = self.firmware_json["model"]["modelOutputNodes"]
            return [name for node in nodes for name in (node["cls_pred"], node["dis_pred"])]
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
    """A JSON file holding an object, or a one-line InputError naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "must hold a JSON object")
    return data


def read_model_folder(path: str | Path) -> ModelFolder:
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "not a model folder (no such directory)")
    manifest = read_json_object(path / MANIFEST)
    for key in ("layout", "input", "outputs", "architecture"):
        if key not in manifest:
            raise InputError(path / MANIFEST, f"lacks {key!r}: not written by convert")
    firmware = read_json_object(path / FIRMWARE_JSON) if (path / FIRMWARE_JSON).exists() else None
    if firmware is not None:
        try:
            nodes = firmware["model"]["modelOutputNodes"]
            if len(nodes) < 3 or not all("cls_pred" in n and "dis_pred" in n for n in nodes[:3]):
                raise KeyError("modelOutputNodes")
            if firmware["numOfClass"] != len(firmware["className"]):
                raise InputError(path / FIRMWARE_JSON, f"numOfClass {firmware['numOfClass']} "
                                 f"but {len(firmware['className'])} class names")
        except (KeyError, TypeError) as exc:
            raise InputError(path / FIRMWARE_JSON, f"lacks {exc} as the firmware reads it") \
                from None
    for needed in (PARAM_FILE, BIN_FILE):
        if not (path / needed).is_file():
            raise InputError(path / needed, "missing from the model folder")
    return ModelFolder(path=path, manifest=manifest, firmware_json=firmware)
