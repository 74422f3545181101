"""The pre-commit hook (.pre-commit-hooks.yaml, convert/precommit.py) run as pre-commit runs it.

pre-commit is not installed here: each hook's `entry` is run as pre-commit would run it,
in a repository stand-in, with the hook's `args` and the touched files its `files`
pattern selects (paths relative to the repository root, which is the working folder),
and the environment's `python` first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import convert
from tests.conftest import LEGACY_CFG, LEGACY_PTH

ROOT = Path(__file__).resolve().parents[1]
HOOKS = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
HOOK = next(hook for hook in HOOKS if hook["id"] == "nanodet-unitv2-model-folders")
UNCHANGED = next(hook for hook in HOOKS if hook["id"] == "nanodet-unitv2-model-folders-unchanged")
FOLDER_FILES = ("manifest.json", "model.json", "model.param", "model.bin")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The real NanoDet-m converted for the UnitV2 (not verified: the hook never runs it)."""
    output = tmp_path_factory.mktemp("precommit") / "converted"
    convert.convert(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True, output=output,
                    verify=False)
    return output


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A repository stand-in: a README and a web app manifest.json beside the models."""
    (tmp_path / "README.md").write_text("models\n")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "manifest.json").write_text("{not json")
    (tmp_path / "models").mkdir()
    return tmp_path


def add_folder(repo: Path, converted: Path, name: str,
               edit: Callable[[Path], None] | None = None) -> list[str]:
    """A copy of the converted folder under models/NAME, edited; its files, repo-relative."""
    folder = repo / "models" / name
    shutil.copytree(converted, folder)
    if edit is not None:
        edit(folder)
    return [f"models/{name}/{file}" for file in FOLDER_FILES]


def run_hook(hook: dict, repo: Path, files: list[str]) -> subprocess.CompletedProcess:
    """`entry` + `args` + the files `files` selects, run at the repository root."""
    selected = [f for f in files if re.search(hook["files"], f)]
    command = [*shlex.split(hook["entry"]), *hook.get("args", []), *selected]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(command, cwd=repo, env={**os.environ, "PATH": path},
                          capture_output=True, text=True, timeout=120, check=False)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("ERROR: ")]


def edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        doc = json.loads((folder / name).read_text())
        change(doc)
        (folder / name).write_text(json.dumps(doc, indent=2))
    return edit


def replace_first_layer_type(old: str, new: str) -> Callable[[Path], None]:
    """Change the type of the first `old` layer in model.param to `new`."""
    def edit(folder: Path) -> None:
        lines = (folder / "model.param").read_text().split("\n")
        index = next(i for i, line in enumerate(lines) if line.split()[:1] == [old])
        lines[index] = lines[index].replace(old, new.ljust(len(old)), 1)
        (folder / "model.param").write_text("\n".join(lines))
    return edit


def test_every_hook_has_what_pre_commit_needs():
    assert HOOKS and all({"id", "name", "entry", "language"} <= set(hook) for hook in HOOKS)
    for hook in HOOKS:
        assert hook["language"] in ("python", "system")
        assert hook.get("pass_filenames", True)
        re.compile(hook["files"])


def test_the_files_pattern_selects_model_folder_files_only():
    pattern = HOOK["files"]
    for path in ("models/unitv2/model.param", "model.bin", "a/b/manifest.json",
                 "models/x/model.json", "models/x/custom.param"):
        assert re.search(pattern, path), path
    for path in ("README.md", "models/x/model.onnx", "model.json.bak", "model.param/x.txt"):
        assert not re.search(pattern, path), path
    assert re.search(UNCHANGED["files"], "models/x/model.sim.onnx")


@pytest.mark.parametrize("hook", HOOKS, ids=[hook["id"] for hook in HOOKS])
def test_a_converted_folder_is_clean(repo, converted, hook):
    files = add_folder(repo, converted, "unitv2") + ["models/unitv2/model.onnx"]
    result = run_hook(hook, repo, ["README.md", "web/manifest.json", *files])
    assert result.returncode == 0, result.stdout + result.stderr
    assert error_lines(result) == [] and result.stderr == ""


def test_files_outside_model_folders_are_ignored(repo):
    result = run_hook(HOOK, repo, ["README.md", "web/manifest.json"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_an_op_the_firmware_ncnn_lacks_fails_naming_the_line(repo, converted):
    files = add_folder(repo, converted, "gelu", replace_first_layer_type("Sigmoid", "GELU"))
    result = run_hook(HOOK, repo, files)
    assert result.returncode == 1
    errors = error_lines(result)
    assert len(errors) == 1, result.stdout  # the folder is checked once for its 4 files
    assert re.match(r"ERROR: models/gelu/model\.param:\d+: GELU .*not registered", errors[0])


def test_the_manifest_target_chooses_the_ncnn_tables(repo, converted):
    def for_current_ncnn(folder: Path) -> None:
        replace_first_layer_type("Sigmoid", "GELU")(folder)
        edit_json("manifest.json", lambda doc: doc.update(target="ncnn-latest"))(folder)

    result = run_hook(HOOK, repo, add_folder(repo, converted, "latest", for_current_ncnn))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(("change", "expected"), [
    (lambda doc: doc.update(numOfClass=3), "model.json: numOfClass: is 3 but className holds 80"),
    (lambda doc: doc.update(modelType="yolo"), "model.json: modelType"),
    (lambda doc: doc["model"]["modelOutputNodes"][1].update(dis_pred="dis_pred_stride_61"),
     ("model.json: model.modelOutputNodes[1].dis_pred: blob 'dis_pred_stride_61' is not in "
      "model.param")),
], ids=["class-count", "model-type", "blob-name"])
def test_a_wrong_model_json_field_fails_naming_the_file_and_key(repo, converted, change,
                                                                 expected):
    files = add_folder(repo, converted, "wrong", edit_json("model.json", change))
    result = run_hook(HOOK, repo, files[1:2])  # only model.json touched
    assert result.returncode == 1
    assert error_lines(result) == [line for line in error_lines(result)
                                   if line.startswith("ERROR: models/wrong/model.json: ")]
    assert expected in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_garbage_manifest_is_one_line(repo, converted):
    def garbage(folder: Path) -> None:
        (folder / "manifest.json").write_bytes(b"\x00\xff not json")

    result = run_hook(HOOK, repo, add_folder(repo, converted, "garbage", garbage))
    assert result.returncode == 1
    assert result.stdout.splitlines() == error_lines(result)
    assert len(error_lines(result)) == 1
    assert error_lines(result)[0].startswith("ERROR: models/garbage/manifest.json: not readable")


def test_only_the_broken_folder_is_named(repo, converted):
    files = add_folder(repo, converted, "good") + add_folder(
        repo, converted, "bad", edit_json("model.json", lambda doc: doc.update(numOfClass=0)))
    result = run_hook(HOOK, repo, files)
    assert result.returncode == 1
    assert [line.split(":")[1].strip() for line in error_lines(result)] == \
        ["models/bad/model.json"]


def test_a_usage_error_is_one_line_exit_2(repo):
    result = run_hook({**HOOK, "args": ["--no-such-option"]}, repo, ["README.md"])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr


def test_the_unchanged_hook_names_a_file_changed_since_convert(repo, converted):
    renamed = edit_json("model.json", lambda doc: doc["className"].__setitem__(0, "human"))
    files = add_folder(repo, converted, "renamed", renamed)
    assert run_hook(HOOK, repo, files).returncode == 0  # still a valid folder
    result = run_hook(UNCHANGED, repo, files)
    assert result.returncode == 1
    assert error_lines(result) == [("ERROR: models/renamed/model.json: changed since convert "
                                   "wrote it (sha256 differs from manifest.json's "
                                   "files.model.json): the manifest's verification is not "
                                   "about this file")]


def test_an_absent_onnx_file_is_no_change(repo, converted):
    def without_onnx(folder: Path) -> None:
        (folder / "model.onnx").unlink()
        (folder / "model.sim.onnx").unlink()

    result = run_hook(UNCHANGED, repo, add_folder(repo, converted, "slim", without_onnx))
    assert result.returncode == 0, result.stdout


def test_a_manifest_without_sha256_map_is_one_line(repo, converted):
    files = add_folder(repo, converted, "nomap",
                       edit_json("manifest.json", lambda doc: doc.update(files=["model.bin"])))
    result = run_hook(UNCHANGED, repo, files)
    assert result.returncode == 1
    assert error_lines(result) == [("ERROR: models/nomap/manifest.json: files: must map file "
                                   "names to sha256 hex digests")]
