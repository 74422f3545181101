"""Ctrl-C, SIGTERM and SIGKILL during real `python -m convert` runs.

Each run gets its own TMPDIR and an empty output parent. Signals are sent when
a file shows the run has reached a point (a shared library mapped, a file in
the partial folder), never after a fixed sleep, and nothing is timed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import LEGACY_PTH

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(),
                                reason="watches /proc/<pid>/maps (Linux)")

POLL = 0.01
GIVE_UP = 900  # seconds: only so that a broken run cannot hang the suite


@dataclass
class Run:
    process: subprocess.Popen
    parent: Path  # the output's parent, empty before the run
    tmpdir: Path

    @property
    def partials(self) -> list[Path]:
        return sorted(self.parent.glob(".out.*.partial"))

    def wait_until(self, reached: Callable[[], bool], what: str) -> None:
        """Poll until `reached()`; fail if the run ends first."""
        deadline = time.monotonic() + GIVE_UP
        while not reached():
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                pytest.fail(f"the run ended (exit {self.process.returncode}) before {what}\n"
                            f"{out}\n{err}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"never reached {what}")
            time.sleep(POLL)

    def partial_has(self, name: str) -> Callable[[], bool]:
        return lambda: any((p / name).exists() for p in self.partials)

    def maps(self, library: str) -> Callable[[], bool]:
        def mapped() -> bool:
            try:
                return library in Path(f"/proc/{self.process.pid}/maps").read_text()
            except OSError:
                return False

        return mapped

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=GIVE_UP)
        return self.process.returncode, out, err


def start(tmp_path: Path, args: list[str], *, name: str = "run",
          program: list[str] | None = None, parent: Path | None = None) -> Run:
    parent = parent or tmp_path / name
    tmpdir = tmp_path / f"{name}-tmpdir"
    parent.mkdir(exist_ok=True)
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    program = program or [sys.executable, "-m", "convert"]
    process = subprocess.Popen([*program, *args], cwd=parent, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Run(process, parent, tmpdir)


def convert_args(checkpoint: Path, *extra: str) -> list[str]:
    return [str(checkpoint), "--legacy-head", "-o", "out", "-q", *extra]


def assert_stopped_cleanly(run: Run, code: int, line: str) -> None:
    returncode, out, err = run.finish()
    where = f"exit {returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert returncode == code, where
    assert err.strip() == line, where
    assert "Traceback" not in out + err, where
    assert sorted(p.name for p in run.parent.iterdir()) == [], where
    assert list(run.tmpdir.iterdir()) == [], where


def pnnx_children(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in children
            if "pnnx" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")]


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("point, marker", [
    ("load or export", None),  # the partial folder exists
    ("onnxsim", "model.onnx"),
    ("pnnx", ".pnnx-work/input.onnx"),
    ("verify", "manifest.json"),
])
def test_ctrl_c_leaves_nothing(tmp_path, small_checkpoints, point, marker):
    run = start(tmp_path, convert_args(small_checkpoints["plus"]))
    run.wait_until(run.partial_has(marker) if marker else lambda: bool(run.partials), point)
    run.process.send_signal(signal.SIGINT)
    assert_stopped_cleanly(run, 130, "convert: interrupted")


def test_ctrl_c_while_importing_torch(tmp_path, small_checkpoints):
    run = start(tmp_path, convert_args(small_checkpoints["plus"]))
    run.wait_until(run.maps("libtorch_cpu"), "torch is being imported")
    run.process.send_signal(signal.SIGINT)
    assert_stopped_cleanly(run, 130, "convert: interrupted")


def test_parity_ctrl_c_while_importing(tmp_path):
    program = [sys.executable, "-m", "parity"]
    # `check` loads torch before it reads its arguments (`--help` no longer does)
    run = start(tmp_path, ["check", str(LEGACY_PTH), str(tmp_path)], program=program)
    run.wait_until(run.maps("libtorch_cpu"), "torch is being imported")
    run.process.send_signal(signal.SIGINT)
    assert_stopped_cleanly(run, 130, "parity: interrupted")


def test_sigterm_during_pnnx_stops_pnnx_and_leaves_nothing(tmp_path, small_checkpoints):
    if not Path(f"/proc/self/task/{os.getpid()}/children").exists():
        pytest.skip("needs /proc/<pid>/task/<pid>/children")
    run = start(tmp_path, convert_args(small_checkpoints["plus"]))
    run.wait_until(lambda: bool(pnnx_children(run.process.pid)), "pnnx runs")
    children = pnnx_children(run.process.pid)
    run.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(run, 143, "convert: terminated")
    assert not [pid for pid in children if is_running(pid)]


def test_sigterm_while_importing(tmp_path, small_checkpoints):
    run = start(tmp_path, convert_args(small_checkpoints["plus"]))
    run.wait_until(run.maps("libtorch_cpu"), "torch is being imported")
    run.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(run, 143, "convert: terminated")


def test_a_killed_runs_partial_is_removed_by_the_next_run(tmp_path, small_checkpoints):
    killed = start(tmp_path, convert_args(small_checkpoints["plus"]), name="killed")
    killed.wait_until(lambda: bool(killed.partials), "the partial folder exists")
    killed.process.kill()
    killed.process.communicate()
    stale = killed.partials
    assert len(stale) == 1 and stale[0].is_dir()

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    after = start(tmp_path, convert_args(garbage), name="after", parent=killed.parent)
    returncode, _, err = after.finish()
    assert returncode == 2 and "garbage.pth" in err, err
    assert list(killed.parent.iterdir()) == []
    assert list(after.tmpdir.iterdir()) == []


def test_a_running_conversions_partial_is_left_alone(tmp_path, small_checkpoints):
    first = start(tmp_path, convert_args(small_checkpoints["plus"], "--no-verify"),
                  name="first")
    first.wait_until(lambda: bool(first.partials), "the partial folder exists")
    first.process.send_signal(signal.SIGSTOP)  # hold it mid-run, lock held
    try:
        mine = first.partials
        garbage = tmp_path / "garbage.pth"
        garbage.write_bytes(b"not a checkpoint")
        second = start(tmp_path, convert_args(garbage), name="second", parent=first.parent)
        returncode, _, err = second.finish()
        assert returncode == 2 and "garbage.pth" in err, err
        assert first.partials == mine and all(p.is_dir() for p in mine)
    finally:
        first.process.send_signal(signal.SIGCONT)
    returncode, _, err = first.finish()
    assert returncode == 0, err
    assert [p.name for p in first.parent.iterdir()] == ["out"]
    assert (first.parent / "out" / "model.param").is_file()
    assert list(first.tmpdir.iterdir()) == []
