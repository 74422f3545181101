"""Write the model folder's JSON files and the optional .tar.gz."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path
from typing import Any

from common.errors import InputError, StageError
from common.hashing import file_sha256
from convert.outputs import WRITTEN_BY
from parity.model_folder import BIN_FILE, FIRMWARE_JSON, MANIFEST, PARAM_FILE
from parity.targets import Target
from parity.targets.unitv2 import UNITV2

MANIFEST_VERSION = 1


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def firmware_json(class_names: list[str], output_names: list[str],
                  target: Target = UNITV2) -> dict[str, Any]:
    """The model.json `target` reads beside a legacy-layout model of this folder."""
    return target.model_json.document(class_names, output_names, PARAM_FILE, BIN_FILE)


def firmware_json_problem(class_names: list[str], output_names: list[str],
                          target: Target = UNITV2) -> str | None:
    """Why `target`'s firmware could not read this model.json, or None."""
    fmt = target.model_json
    need = fmt.parse_bytes(firmware_json(class_names, output_names, target))
    if need > fmt.pool_bytes:
        return (f"{FIRMWARE_JSON} would need ~{need} bytes to parse but the firmware reads it "
                f"into {fmt.pool_bytes}: shorten the class names")
    return None


def check_firmware_json(where: str | Path, class_names: list[str],
                        output_names: list[str], target: Target = UNITV2) -> None:
    """Before any work: the class names fit the firmware's model.json buffer."""
    problem = firmware_json_problem(class_names, output_names, target)
    if problem:
        raise InputError(where, problem)


def write_firmware_json(folder: Path, class_names: list[str], output_names: list[str],
                        target: Target = UNITV2) -> None:
    problem = firmware_json_problem(class_names, output_names, target)
    if problem:
        raise StageError("write", problem)
    write_json(folder / FIRMWARE_JSON, firmware_json(class_names, output_names, target))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """manifest.json with the sha256 of every file and the marker `--force` looks for."""
    files = {p.name: file_sha256(p) for p in sorted(folder.iterdir())
             if p.is_file() and p.name != MANIFEST}
    manifest = {"manifest_version": MANIFEST_VERSION, "written_by": WRITTEN_BY, **manifest,
                "files": files}
    write_json(folder / MANIFEST, manifest)
    return manifest


def write_tar(folder: Path, destination: Path, arcname: str) -> None:
    """A reproducible .tar.gz: sorted entries, fixed owner and time."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with gzip.GzipFile(destination, "wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        tar.add(folder, arcname=arcname, recursive=False, filter=clean)
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"{arcname}/{path.name}", filter=clean)
