"""One harness for every hostile case: run a command, then check what it promised.

Promises checked for every case: the documented exit code; no traceback; at
most two lines on stderr, naming what the case says they name; nothing left in
TMPDIR; no file beside the output that was not there before (except what the
case says it may write); every input and pre-existing file unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner


@dataclass
class Workspace:
    """A fresh folder per case, holding copies of the inputs a case may use.

    `root` is the case's folder (every file below it is hashed before and after);
    `tmp` is the TMPDIR the command sees and must leave empty; `paths` maps
    short names to the inputs prepared by the matrix (see test_hostile_matrix).
    """

    root: Path
    tmp: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]

    def file(self, name: str, content: bytes | str) -> Path:
        """A new input file below the workspace."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
        return path


@dataclass(frozen=True)
class Case:
    """One hostile or unusual input.

    `args(ws)` gives the command's arguments; `setup(ws)` may prepare files
    first. `mentions(ws)` lists what the error line must name (a file, a key, a
    stage). `creates` are names below the workspace that the run may add (a
    valid case's output); everything else must stay as it was.
    """

    id: str
    command: str  # "convert" or "parity"
    args: Callable[[Workspace], list[str]]
    exit_code: int = 2
    mentions: Callable[[Workspace], list[str]] = lambda ws: []
    setup: Callable[[Workspace], None] | None = None
    creates: tuple[str, ...] = ()
    max_stderr_lines: int = 2


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (or 'dir' / 'link:target') of everything below `root`."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "dir"
            elif path.is_file():
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[rel] = "special"
    return found


def command(name: str):
    if name == "convert":
        from convert.cli import main
    else:
        from parity.cli import main
    return main


def run_case(case: Case, ws: Workspace) -> None:
    if case.setup is not None:
        case.setup(ws)
    args = [str(a) for a in case.args(ws)]
    before = snapshot(ws.root)
    old_tempdir = tempfile.tempdir
    old_env = os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(ws.tmp), str(ws.tmp)
    cwd = os.getcwd()
    os.chdir(ws.root)
    try:
        result = CliRunner().invoke(command(case.command), args)
    finally:
        os.chdir(cwd)
        tempfile.tempdir = old_tempdir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
    err = result.stderr.strip()
    where = f"{case.command} {' '.join(args)}\nexit {result.exit_code}\nstderr:\n{err}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: "
                             f"{result.exception}\n{where}") from result.exception
    assert result.exit_code == case.exit_code, where
    assert "Traceback" not in result.output and "Traceback" not in err, where
    if case.exit_code != 0:
        lines = err.splitlines()
        assert 1 <= len(lines) <= case.max_stderr_lines, where
        for needle in case.mentions(ws):
            assert str(needle) in err, f"stderr does not name {needle!r}\n{where}"
    leftovers = list(ws.tmp.iterdir())
    assert not leftovers, f"left in TMPDIR: {leftovers}\n{where}"
    after = snapshot(ws.root)
    changed = sorted(k for k in before if k.split("/")[0] != ws.tmp.name
                     and after.get(k) != before[k])
    assert not changed, f"inputs changed or removed: {changed}\n{where}"
    added = sorted(k for k in after if k not in before and k.split("/")[0] != ws.tmp.name
                   and not any(k == c or k.startswith(c + "/") for c in case.creates))
    assert not added, f"left behind: {added}\n{where}"


def fresh_workspace(base: Path, inputs: dict[str, Path]) -> Workspace:
    """Copy `inputs` (files or folders) into a new workspace below `base`."""
    root = Path(tempfile.mkdtemp(dir=base))
    tmp = root / "tmpdir"
    tmp.mkdir()
    ws = Workspace(root, tmp)
    for name, source in inputs.items():
        target = root / "inputs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        ws.paths[name] = target
    return ws
