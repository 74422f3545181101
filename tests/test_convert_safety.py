"""`convert` never loses a file, never leaves one behind, and stops cleanly on signals.

In-process checks of convert/outputs.py, the logs policy and the entry points;
tests/test_signals.py sends real signals to real runs, and the hostile matrix
(tests/hostile/convert_cases.py) covers refused paths.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from common import entrypoints
from common.cli import Terminated, deferred_signals
from common.errors import InputError, StageError, ToolError
from convert import convert_checkpoint, outputs
from convert.cli import main
from convert.outputs import Partial, plan_output, remove_stale_partials


@pytest.fixture(scope="module")
def converted(tmp_path_factory, small_checkpoints) -> Path:
    """A folder convert wrote (small Plus, --legacy-head, no verification)."""
    out = tmp_path_factory.mktemp("converted") / "out"
    convert_checkpoint(small_checkpoints["plus"], legacy_head=True, output=out, verify=False)
    return out


@pytest.fixture
def private_tmpdir(tmp_path, monkeypatch) -> Path:
    """TMPDIR for the code under test, to see what it leaves there."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    return tmpdir


def copy_folder(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def run_cli(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


# --force


def test_force_replaces_a_folder_convert_wrote(tmp_path, converted, small_checkpoints):
    out = copy_folder(converted, tmp_path / "out")
    (out / "model.param").write_text("stale")
    code, err = run_cli(small_checkpoints["legacy"], "-o", out, "--force", "--no-verify", "-q")
    assert code == 0, err
    assert (out / "model.param").read_text() != "stale"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["written_by"] == outputs.WRITTEN_BY
    assert manifest["architecture"]["head"]["kind"] == "NanoDetHead"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no .out.old, no partial


def test_force_refuses_a_users_folder_and_keeps_it(tmp_path, small_checkpoints):
    """Was: --force replaced any folder (tests/test_convert.py::test_existing_folder_...)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = [small_checkpoints["legacy"], "-o", out, "-q", "--no-verify"]
    code, err = run_cli(*args)
    assert code == 2 and "already exists; use --force" in err
    code, err = run_cli(*args, "--force")
    assert code == 2 and "not written by convert" in err and len(err.splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_inputs_inside_the_output_are_never_replaced(tmp_path, converted, small_checkpoints):
    out = copy_folder(converted, tmp_path / "out")
    checkpoint = out / "model.pth"
    checkpoint.write_bytes(small_checkpoints["plus"].read_bytes())
    with pytest.raises(InputError, match="holds the checkpoint"):
        plan_output(out, force=True, tar=False, inputs={"the checkpoint": checkpoint})
    link = tmp_path / "elsewhere.pth"
    link.symlink_to(checkpoint)  # a link outside, the file inside
    with pytest.raises(InputError, match="holds the checkpoint"):
        plan_output(out, force=True, tar=False, inputs={"the checkpoint": link})
    link.unlink()
    link.write_bytes(checkpoint.read_bytes())
    checkpoint.unlink()
    assert plan_output(out, force=True, tar=False, inputs={"the checkpoint": link}).folder == out


def on_line(reported: str, action):
    """A `report` for convert that calls `action()` on the line holding `reported`."""

    def report(line: str) -> None:
        if reported in line:
            action()

    return report


def test_output_that_appears_meanwhile_is_kept(tmp_path, small_checkpoints):
    """No --force: someone else's folder created during the run is not replaced."""
    out = tmp_path / "out"

    def someone_else_writes():
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")

    with pytest.raises(ToolError, match="already exists"):
        convert_checkpoint(small_checkpoints["plus"], output=out, verify=False,
                           report=on_line(" write ...", someone_else_writes))
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch, converted):
    out = copy_folder(converted, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    plan = plan_output(out, force=True, tar=False, inputs={})
    real_rename = os.rename

    def failing(source, target):
        if Path(target) == out and Path(source).name.endswith(".partial"):
            raise OSError(28, "No space left on device")
        return real_rename(source, target)

    with pytest.raises(StageError, match="cannot move the result"), \
            outputs.staged_output(plan) as staging:
        (staging.folder.path / "model.param").write_text("new")
        monkeypatch.setattr(outputs.os, "rename", failing)
        staging.publish()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_tar_force_replaces_an_archive_file(tmp_path, small_checkpoints):
    out, archive = tmp_path / "out", tmp_path / "out.tar.gz"
    archive.write_bytes(b"old archive")
    code, err = run_cli(small_checkpoints["legacy"], "-o", out, "--tar", "--no-verify", "-q")
    assert code == 2 and str(archive) in err and "--force" in err
    assert archive.read_bytes() == b"old archive" and not out.exists()
    code, err = run_cli(small_checkpoints["legacy"], "-o", out, "--tar", "--force",
                        "--no-verify", "-q")
    assert code == 0, err
    with gzip.open(archive) as gz, tarfile.open(fileobj=gz) as tar:
        names = sorted(tar.getnames())
    assert names == ["out", *sorted(f"out/{p.name}" for p in out.iterdir())]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.tar.gz"]


# partials and their locks


def test_stale_partials_are_removed_and_live_ones_kept(tmp_path):
    plan = plan_output(tmp_path / "out", force=False, tar=True, inputs={})
    dead_folder = tmp_path / ".out.0123abcd.partial"
    dead_folder.mkdir()
    (dead_folder / "model.onnx").write_bytes(b"x" * 100)
    dead_archive = tmp_path / ".out.tar.gz.89abcdef.partial"
    dead_archive.write_bytes(b"half an archive")
    decoys = [tmp_path / ".out.notes.partial", tmp_path / ".other.0123abcd.partial",
              tmp_path / ".out.0123abcd.partial.txt"]
    for decoy in decoys:
        decoy.write_text("not ours")
    live = Partial.create(tmp_path, "out", folder=True)  # locked by this process
    try:
        removed = remove_stale_partials(plan)
        assert sorted(removed) == sorted([dead_folder, dead_archive])
        assert live.path.is_dir() and all(d.exists() for d in decoys)
        assert not dead_folder.exists() and not dead_archive.exists()
    finally:
        live.discard()
    assert not live.path.exists()
    assert sorted(tmp_path.iterdir()) == sorted(decoys)


def test_the_next_conversion_removes_a_dead_runs_partial(tmp_path, small_checkpoints):
    dead = tmp_path / ".out.0123abcd.partial"
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"from a killed run")
    code, err = run_cli(small_checkpoints["plus"], "-o", tmp_path / "out", "--no-verify", "-q")
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Terminated])
@pytest.mark.parametrize("stage", ["load", "onnxsim", "pnnx", "write"])
def test_an_interrupt_in_any_stage_leaves_nothing(tmp_path, private_tmpdir, small_checkpoints,
                                                  stage, interrupt):
    """The interrupt comes when the stage's work is done, its files written (tests/
    test_signals.py sends real signals through the command line)."""

    def stop():
        raise interrupt()

    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    with pytest.raises(interrupt):
        convert_checkpoint(small_checkpoints["plus"], legacy_head=True, output=out, tar=True,
                           report=on_line(f" {stage} done", stop))
    assert list(out.parent.iterdir()) == [] and list(private_tmpdir.iterdir()) == []


def test_deferred_signals_hold_an_interrupt_until_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# logs


def test_a_failed_pnnx_keeps_one_log_named_in_the_error(tmp_path, monkeypatch, private_tmpdir,
                                                         small_checkpoints):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "pnnx").write_text("#!/bin/sh\nexit 1\n")
    (tools / "pnnx").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    code, err = run_cli(small_checkpoints["legacy"], "-o", tmp_path / "out", "-q")
    assert code == 2 and "pnnx: pnnx failed" in err
    kept = list(private_tmpdir.iterdir())
    assert len(kept) == 1 and f"(log: {kept[0]})" in err
    assert kept[0].read_text().startswith(f"$ {tools / 'pnnx'} ")
    assert not (tmp_path / "out").exists()


def test_a_failed_onnxsim_keeps_one_log_named_in_the_error(tmp_path, monkeypatch,
                                                            private_tmpdir, small_checkpoints):
    import onnxsim

    def broken(model, **options):
        print("onnxsim says why")
        raise RuntimeError("no simplification today")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    code, err = run_cli(small_checkpoints["legacy"], "-o", tmp_path / "out", "-q")
    assert code == 2 and "onnxsim: simplification failed: no simplification today" in err
    kept = list(private_tmpdir.iterdir())
    assert len(kept) == 1 and f"(log: {kept[0]})" in err
    assert "onnxsim says why" in kept[0].read_text()


def test_late_failures_fail_before_any_work(tmp_path, small_checkpoints):
    def no_export():
        raise AssertionError("exported although the input is bad")

    names = tmp_path / "names.txt"
    names.write_text("".join(f"{c * 3000}\n" for c in "abc"))
    with pytest.raises(InputError) as error:
        convert_checkpoint(small_checkpoints["plus"], class_names=names, legacy_head=True,
                           output=tmp_path / "out", report=on_line(" onnx-export", no_export))
    assert error.value.where == str(names) and "model.json" in error.value.problem
    code, err = run_cli(small_checkpoints["plus"], "--input-size", "100000x100000",
                        "-o", tmp_path / "out", "-q")
    assert code == 2 and "at most 2048" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.txt"]


# entry points


def test_python_m_convert_imports_torch_only_when_needed():
    code = ("import sys, convert, common.entrypoints; "
            "print(sorted(m for m in ('torch', 'click', 'onnx') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("interrupt, code, line", [
    (KeyboardInterrupt, 130, "parity: interrupted"),
    (Terminated, 143, "parity: terminated"),
])
def test_entry_point_interrupted_while_importing(monkeypatch, capsys, interrupt, code, line):
    def slow_import(name):
        raise interrupt()

    monkeypatch.setattr(entrypoints.importlib, "import_module", slow_import)
    with pytest.raises(SystemExit) as stop:
        entrypoints.parity()
    assert stop.value.code == code
    assert capsys.readouterr().err == line + "\n"


def test_entry_point_keeps_clicks_exit_codes(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["convert", "--no-such-option"])
    with pytest.raises(SystemExit) as stop:
        entrypoints.convert()
    assert stop.value.code == 2 and "No such option" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["convert", "--help"])
    with pytest.raises(SystemExit) as stop:
        entrypoints.convert()
    assert stop.value.code == 0 and "--force" in capsys.readouterr().out
