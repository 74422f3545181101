"""The commands' surface: fast --help and --version, stdout for scripts, the umbrella command.

`--help` and `--version` must not import torch, onnx, onnxruntime, ncnn, cv2 or
scipy (checked in a fresh interpreter; benchmarks/bench_help.py times them).
`parity` prints one `kind: PATH` line per report written and the verdict on
stdout; everything else goes to stderr.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from common.umbrella import main as umbrella
from parity.cli import main as parity
from tests.conftest import LEGACY_PTH
from tests.crafted_reports import shard_reports, write_reports

HEAVY = ("torch", "onnx", "onnxruntime", "ncnn", "cv2", "scipy")
PROGRAMS = {"convert": "convert.cli", "parity": "parity.cli",
            "nanodet-unitv2": "common.umbrella"}

# Runs a command as its console script does, then reports which heavy modules it
# loaded. argv: preload (comma-separated modules, may be empty), prog, args...
PROBE = f"""
import importlib, json, sys
from common.entrypoints import run_command
preload, prog, *args = sys.argv[1:]
for name in filter(None, preload.split(",")):
    importlib.import_module(name)
sys.argv = [prog, *args]
code = 0
try:
    run_command(prog, {PROGRAMS!r}[prog])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def probe(prog: str, *args: str, preload: str = "") -> tuple[dict, str]:
    """(exit code and heavy modules loaded, stdout) of `prog args...` in a fresh Python."""
    done = subprocess.run([sys.executable, "-c", PROBE, preload, prog, *args],
                          check=False, capture_output=True, text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


HELP_RUNS = [("convert", "--help"), ("parity", "--help"), ("parity", "check", "--help"),
             ("parity", "merge", "-h"), ("nanodet-unitv2", "--help"),
             ("nanodet-unitv2", "convert", "--help"),
             ("nanodet-unitv2", "parity", "check", "--help")]


@pytest.mark.parametrize("argv", HELP_RUNS, ids=" ".join)
def test_help_imports_no_heavy_module(argv):
    found, out = probe(*argv)
    assert found == {"code": 0, "heavy": []}
    assert out.startswith(f"Usage: {' '.join(a for a in argv if not a.startswith('-'))} ")


def test_the_probe_sees_a_heavy_module():
    """The check above can fail: a module that imports torch is seen."""
    found, _ = probe("parity", "--help", preload="parity.records")
    assert found["code"] == 0 and {"torch", "ncnn"} <= set(found["heavy"])


VERSION_RUNS = [(("convert", "--version"), "convert (nanodet-unitv2) "),
                (("parity", "--version"), "parity (nanodet-unitv2) "),
                (("nanodet-unitv2", "--version"), "nanodet-unitv2 "),
                (("nanodet-unitv2", "parity", "--version"), "parity (nanodet-unitv2) ")]


@pytest.mark.parametrize("argv, head", VERSION_RUNS, ids=lambda v: " ".join(v)
                         if isinstance(v, tuple) else "")
def test_version_names_the_tool_and_its_libraries_without_importing_them(argv, head):
    found, out = probe(*argv)
    assert found == {"code": 0, "heavy": []}
    first, libraries = out.splitlines()
    version = importlib.metadata.version("nanodet-unitv2")
    assert first == head + version
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version)
    assert f"torch {importlib.metadata.version('torch')}" in libraries
    assert f"ncnn {importlib.metadata.version('ncnn')}" in libraries


# ---------------------------------------------------------------- stdout of parity

def test_merge_prints_report_paths_and_verdict_on_stdout(tmp_path):
    shards = write_reports(tmp_path, shard_reports())
    out = {kind: tmp_path / f"merged.{ext}"
           for kind, ext in (("json", "json"), ("junit", "xml"), ("html", "html"))}
    result = CliRunner().invoke(parity, ["merge", *map(str, shards), "-o", str(out["json"]),
                                         "--junit", str(out["junit"]),
                                         "--html", str(out["html"])])
    gate = json.loads(out["json"].read_text())["gate"]
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"{kind}: {path}" for kind, path in out.items()]
    assert all(path.is_file() for path in out.values())
    assert len(lines) == 4 and lines[3].startswith("parity: PASS" if gate["passed"]
                                                   else "parity: FAIL")
    assert result.exit_code == (0 if gate["passed"] else 1)
    assert "parity" in result.stderr  # the table stays on stderr


def test_check_prints_only_what_it_wrote_and_the_verdict_on_stdout(tmp_path,
                                                                   small_checkpoints):
    images = tmp_path / "images"
    images.mkdir()
    from parity.images import bundled_images

    shutil.copy(bundled_images()[0], images)
    from convert import convert_checkpoint

    checkpoint = small_checkpoints["legacy"]
    folder = convert_checkpoint(checkpoint, legacy_head=True, output=tmp_path / "unitv2",
                                verify=False).folder
    report = tmp_path / "r.json"
    result = CliRunner().invoke(parity, ["check", str(checkpoint), str(folder), "--images",
                                         str(images), "--json", str(report), "-q"])
    gate = json.loads(report.read_text())["gate"]
    verdict = (f"parity: PASS ({len(gate['checks'])} checks on 1 images)" if gate["passed"]
               else f"parity: FAIL, first failing stage: {gate['blamed_stage']}")
    assert result.stdout.splitlines()[0] == f"json: {report}"
    assert result.stdout.splitlines()[1].startswith(verdict)
    assert len(result.stdout.splitlines()) == 2
    assert result.exit_code == (0 if gate["passed"] else 1)


def test_bad_input_writes_nothing_on_stdout(tmp_path):
    result = CliRunner().invoke(parity, ["merge", str(tmp_path / "missing.json"), "-o",
                                         str(tmp_path / "m.json")])
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- convert progress

def test_verify_reports_photos_done_of_total(tmp_path, small_checkpoints):
    from convert import convert_checkpoint
    from tests.conftest import photo

    lines: list[str] = []
    frames = [("a.jpg", photo("astronaut")), ("b.jpg", photo("rocket"))]
    convert_checkpoint(small_checkpoints["legacy"], legacy_head=True, output=tmp_path / "out",
                       frames=frames, report=lines.append)
    progress = [line for line in lines if "photos" in line]
    assert progress == ["[8/8] verify 1/2 photos ...", "[8/8] verify 2/2 photos ..."]


# ---------------------------------------------------------------- the umbrella command

@pytest.mark.parametrize("args, needle", [
    (["convert", "missing.pth", "--no-verify"], "missing.pth"),
    (["parity", "check", "missing.pth", "nodir"], "missing.pth"),
    (["parity", "check", "--bogus"], "--bogus"),
    (["parity"], "missing command"),
    (["deploy"], "deploy"),
    ([], "missing command"),
])
def test_umbrella_errors_are_one_line_naming_the_input(tmp_path, args, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(umbrella, args, prog_name="nanodet-unitv2")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("nanodet-unitv2: error: ") and needle in line, line
    assert result.stdout == ""


def test_umbrella_runs_the_same_command(tmp_path):
    shards = write_reports(tmp_path, shard_reports())
    direct = CliRunner().invoke(parity, ["merge", *map(str, shards), "-o",
                                         str(tmp_path / "a.json")])
    below = CliRunner().invoke(umbrella, ["parity", "merge", *map(str, shards), "-o",
                                          str(tmp_path / "b.json")])
    assert below.exit_code == direct.exit_code
    assert below.stdout.replace("b.json", "a.json") == direct.stdout


def test_umbrella_console_script_answers_ctrl_c_with_one_line(tmp_path):
    script = shutil.which("nanodet-unitv2")
    assert script, "pip install -e . installs the nanodet-unitv2 script"
    process = subprocess.Popen([script, "parity", "check", str(LEGACY_PTH), str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not maps_library(process.pid, "libtorch_cpu"):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert (process.returncode, err.strip(), out) == (130, "nanodet-unitv2: interrupted", "")


def maps_library(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
