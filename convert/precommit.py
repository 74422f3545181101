"""The pre-commit hook for repositories that keep converted model folders.

    python -m convert.precommit FILE...     (what `.pre-commit-hooks.yaml` runs)

pre-commit passes the files a commit touches. Each model folder they lie in (a folder
holding `manifest.json` and `model.param`, as `convert` writes it) is checked once:

* `manifest.json` and `model.json` as parity and the target's firmware read them
  (parity/model_folder.py; model.json against the format of the manifest's target);
* the `.param` and `.bin` the target loads (model.json's `modelParamName` /
  `modelBinName`, else model.param / model.bin) against the ncnn tables of the
  manifest's target (convert/ncnn_lint.py): errors fail, warnings are printed;
* every blob the target feeds or extracts (manifest `input.name`, model.json's output
  nodes, else manifest `outputs`) is a blob of that `.param`;
* with `--unchanged`: every file of the folder that manifest.json lists (`files`) still
  has the sha256 `convert` wrote, so the manifest's verification is about these bytes
  (a file that is absent, such as an uncommitted model.onnx, is not a change).

Other files are ignored (also a `manifest.json` without a `model.param` beside it).
Only light modules are imported: no torch, onnx or ncnn. One line per problem on
stdout, naming the file (`ERROR: unitv2/model.param:7: ...`). Exit 0 clean, 1 any
error, 2 usage error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from common.cli import OneLineCommand, one_line_errors
from common.errors import EXIT_CHECK_FAILED, EXIT_OK, InputError
from common.hashing import file_sha256
from convert.ncnn_lint import lint_param
from parity.json_shape import conform
from parity.model_folder import (
    BIN_FILE,
    FIRMWARE_JSON,
    MANIFEST,
    MANIFEST_SHAPE,
    PARAM_FILE,
    ModelFolder,
    folder_file,
    read_json_object,
    read_model_folder,
)
from parity.ncnn_param import Param
from parity.targets import Target, target_named

PROG = "nanodet-unitv2-precommit"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Problem:
    """One line of the hook's output."""

    severity: Literal["error", "warning"]
    text: str

    def __str__(self) -> str:
        return f"{self.severity.upper()}: {self.text}"


def model_folders(paths: Iterable[Path]) -> list[Path]:
    """The model folders `paths` lie in, each once, in the order first touched."""
    folders: dict[Path, None] = {}
    for path in paths:
        folder = path.parent
        if (folder / MANIFEST).is_file() and (folder / PARAM_FILE).is_file():
            folders.setdefault(folder, None)
    return list(folders)


def manifest_target(folder: Path) -> Target:
    """The target manifest.json names, the manifest checked as parity reads it."""
    path = folder_file(folder, MANIFEST)
    manifest = conform(path, read_json_object(path), MANIFEST_SHAPE)
    return target_named(manifest["target"], str(path))


def missing_blobs(model: ModelFolder) -> list[Problem]:
    """Blobs the target feeds or extracts that the .param it loads does not have."""
    param = model.device_param
    blobs = Param.scan(param.read_bytes().decode("utf-8", errors="replace")).blob_names()
    named = [(model.path / MANIFEST, "input.name", model.input_name)]
    if model.firmware_json is not None:
        names = model.output_names
        named += [(model.path / FIRMWARE_JSON,
                   f"model.modelOutputNodes[{i // 2}].{('cls_pred', 'dis_pred')[i % 2]}", name)
                  for i, name in enumerate(names)]
    else:
        named += [(model.path / MANIFEST, f"outputs[{i}]", name)
                  for i, name in enumerate(model.output_names_of_manifest)]
    return [Problem("error", f"{where}: {key}: blob {name!r} is not in {param.name}")
            for where, key, name in named if name not in blobs]


def lint_problems(param: Path, weights: Path, target: Target) -> list[Problem]:
    """The ncnn lint of `param` and `weights` for `target`, one problem per finding."""
    findings = lint_param(param, weights if weights.is_file() else None, target.name)
    return [Problem(f.severity, str(f)) for f in findings]


def changed_files(folder: Path) -> list[Problem]:
    """Files of the folder whose sha256 is not the one manifest.json lists for them."""
    manifest_path = folder / MANIFEST
    files = read_json_object(manifest_path).get("files")
    if not isinstance(files, dict) or not all(
            isinstance(digest, str) and SHA256_HEX.fullmatch(digest) for digest in files.values()):
        return [Problem("error", f"{manifest_path}: files: must map file names to sha256 "
                        "hex digests")]
    problems = []
    for name, digest in files.items():
        path = folder / name
        if name in (MANIFEST, "", ".", "..") or any(c in name for c in "/\\\0"):
            problems.append(Problem("error", f"{manifest_path}: files: {name!r} is not the "
                                    "name of a file in the model folder itself"))
        elif path.is_file() and not path.is_symlink() and sha256_or_none(path) != digest:
            problems.append(Problem("error", f"{path}: changed since convert wrote it (sha256 "
                                    f"differs from {MANIFEST}'s files.{name}): the "
                                    "manifest's verification is not about this file"))
    return problems


def sha256_or_none(path: Path) -> str | None:
    """The file's sha256; None when it cannot be read (that is a change too)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def folder_problems(folder: Path, unchanged: bool = False) -> list[Problem]:
    """Everything wrong with one model folder, as the hook prints it."""
    try:
        target = manifest_target(folder)
    except InputError as exc:
        return [Problem("error", str(exc))]
    hashes = changed_files(folder) if unchanged else []
    try:
        model: ModelFolder | None = read_model_folder(folder)
    except InputError as exc:
        model = None
        problems = [Problem("error", str(exc))]
    else:
        problems = []
    param = model.device_param if model else folder / PARAM_FILE
    weights = model.device_bin if model else folder / BIN_FILE
    if param.is_file():
        linted = lint_problems(param, weights, target)
        problems += linted
        if model is not None and not any(p.severity == "error" for p in linted):
            problems += missing_blobs(model)
    return hashes + problems


@click.command(PROG, cls=OneLineCommand,
               help="Check the converted model folders FILES lie in (pre-commit hook).")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--unchanged", is_flag=True,
              help="Also require the sha256 manifest.json lists for each file.")
@one_line_errors(PROG)
def main(files: tuple[Path, ...], unchanged: bool) -> int:
    """Print one line per problem; exit 1 when one is an error."""
    problems = [p for folder in model_folders(files)
                for p in folder_problems(folder, unchanged)]
    for problem in problems:
        click.echo(str(problem))
    failed = any(p.severity == "error" for p in problems)
    return EXIT_CHECK_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    main(prog_name=PROG)
