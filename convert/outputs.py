"""Where `convert` writes, and how it never loses or leaves behind a file.

* Paths are resolved and checked before any work: the output folder's name,
  its parent, what is already there, and the inputs.
* `--force` replaces only a folder that convert wrote (manifest.json carries
  `WRITTEN_BY` and every entry is a file the manifest lists) and never one
  that holds an input or the current folder; a `--tar` archive is replaced
  only when it is a regular file. Links and other kinds of file are refused.
* Work happens in a *partial* beside the output (`.NAME.<8 hex>.partial`, a
  folder, and `.NAME.tar.gz.<8 hex>.partial` for the archive), locked with
  flock(2) for as long as its run lives. It is renamed into place at the end
  or removed on any error, Ctrl-C or SIGTERM. A run that was killed outright
  leaves its partial unlocked, and the next run for the same output removes
  it; a running conversion's partial stays locked, so it is never touched.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from common.cli import deferred_signals
from common.errors import InputError, StageError

MANIFEST = "manifest.json"
WRITTEN_BY = "nanodet-unitv2 convert"
ARCHIVE_SUFFIX = ".tar.gz"
PARTIAL_SUFFIX = ".partial"
STARTING_SUFFIX = ".starting"  # a partial's name before it is locked
TOKEN_HEX = 8
DEFAULT_NAME_MAX = 255


@dataclass(frozen=True)
class OutputPlan:
    """The resolved output folder, the archive beside it (--tar), and what to protect."""

    folder: Path
    archive: Path | None
    force: bool
    protected: dict[str, Path] = field(default_factory=dict)  # what -> resolved path

    @property
    def parent(self) -> Path:
        return self.folder.parent


def plan_output(output: str | Path, *, force: bool, tar: bool,
                inputs: dict[str, str | Path | None]) -> OutputPlan:
    """Resolve and check the output (and archive) before any work; raises InputError."""
    folder = resolve_output(Path(output))
    try:
        protected = {"the current folder": Path.cwd().resolve()}
    except OSError:
        raise InputError(".", "the current folder no longer exists") from None
    protected |= {what: _resolve(Path(path)) for what, path in inputs.items() if path}
    archive = folder.with_name(folder.name + ARCHIVE_SUFFIX) if tar else None
    plan = OutputPlan(folder, archive, force, protected)
    check_parent(plan)
    check_targets(plan)
    return plan


def resolve_output(path: Path) -> Path:
    """An absolute path with a resolved parent; the last component stays as given."""
    if path.name in ("", ".."):
        path = _resolve(path)
    else:
        path = _resolve(path.parent) / path.name
    if not path.name:
        raise InputError(path, "is not a folder name; give -o a new folder to write")
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("-o", f"{os.fsencode(path)!r} is not UTF-8 text, which torch, onnx "
                         "and pnnx need") from None
    return path


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:
        raise InputError(path, f"cannot be resolved ({exc})") from None


def check_parent(plan: OutputPlan) -> None:
    """The output's parent is an existing folder and every name we write there fits."""
    parent = plan.parent
    if not parent.exists():
        raise InputError(parent, "output location does not exist")
    if not parent.is_dir():
        raise InputError(parent, "output location is not a folder")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = DEFAULT_NAME_MAX
    longest = plan.archive.name if plan.archive else plan.folder.name
    overhead = len(f"..{'0' * TOKEN_HEX}{STARTING_SUFFIX}")
    size = len(os.fsencode(longest)) + overhead
    if size > name_max:
        room = name_max - overhead - (len(ARCHIVE_SUFFIX) if plan.archive else 0)
        raise InputError(plan.folder, f"name is too long ({len(os.fsencode(plan.folder.name))} "
                         f"bytes; at most {room} here)")


def check_targets(plan: OutputPlan) -> None:
    """What is already at the output (and the archive) may be replaced; else InputError."""
    _check_folder(plan)
    if plan.archive is not None:
        _check_archive(plan)


def _check_folder(plan: OutputPlan) -> None:
    folder = plan.folder
    if folder.is_symlink():
        raise InputError(folder, "is a symbolic link; give -o a real folder path")
    if not folder.exists():
        return
    _refuse_if_protected(plan, folder)
    if not folder.is_dir():
        raise InputError(folder, "exists and is not a folder; choose another -o")
    if not plan.force:
        raise InputError(folder, "already exists; use --force to replace it")
    check_written_by_convert(folder)


def _check_archive(plan: OutputPlan) -> None:
    archive = plan.archive
    assert archive is not None
    if archive.is_symlink():
        raise InputError(archive, "is a symbolic link; --tar replaces only a regular file")
    if not archive.exists():
        return
    _refuse_if_protected(plan, archive)
    if not archive.is_file():
        raise InputError(archive, "exists and is not a regular file")
    if not plan.force:
        raise InputError(archive, "already exists; use --force to replace it")


def _refuse_if_protected(plan: OutputPlan, target: Path) -> None:
    """Never replace an input, the current folder, or a folder holding one."""
    for what, path in plan.protected.items():
        if path == target:
            raise InputError(target, f"is {what}; convert never replaces it")
        if path.is_relative_to(target):
            raise InputError(target, f"holds {what} ({path}); --force never replaces it")


def check_written_by_convert(folder: Path) -> None:
    """Only convert's own folders may be replaced: marker and nothing unlisted."""
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("written_by") != WRITTEN_BY:
        raise InputError(folder, f"was not written by convert (no {MANIFEST} saying so); "
                         "--force replaces only convert's own folders")
    files = manifest.get("files")
    listed = (set(files) if isinstance(files, dict) else set()) | {MANIFEST}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(folder, f"cannot be read ({exc.strerror})") from None
    for entry in entries:
        if entry.name not in listed or not entry.is_file(follow_symlinks=False):
            raise InputError(Path(entry.path), "was not written by convert; --force would "
                             "delete it (move it out or choose another -o)")


class Partial:
    """A file or folder beside the output that only this process works in, locked.

    Created under a `.starting` name, locked, then renamed to its `.partial`
    name: every `.partial` another run can see is either locked (its run is
    alive) or stale (its run died).
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def create(cls, parent: Path, stem: str, *, folder: bool) -> Partial:
        with deferred_signals():
            for _ in range(100):
                token = secrets.token_hex(TOKEN_HEX // 2)
                starting = parent / f".{stem}.{token}{STARTING_SUFFIX}"
                try:
                    fd = _create_exclusive(starting, folder)
                except FileExistsError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path = parent / f".{stem}.{token}{PARTIAL_SUFFIX}"
                    os.rename(starting, path)
                except BaseException:
                    os.close(fd)
                    _remove(starting)
                    raise
                return cls(path, fd)
        raise FileExistsError(errno.EEXIST, "no free partial name", str(parent))

    def release(self) -> None:
        """Unlock (after the partial was renamed into place or removed)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Remove the partial, then unlock it."""
        with deferred_signals():
            _remove(self.path)
            self.release()


def _create_exclusive(path: Path, folder: bool) -> int:
    if not folder:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    os.mkdir(path)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except BaseException:
        os.rmdir(path)
        raise


def _create_partial(parent: Path, stem: str, *, folder: bool) -> Partial:
    """Partial.create with OSError as one line naming the output location."""
    try:
        return Partial.create(parent, stem, folder=folder)
    except OSError as exc:
        raise InputError(parent, f"output location is not writable ({exc.strerror})") \
            from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


def partial_pattern(stems: list[str]) -> re.Pattern[str]:
    names = "|".join(re.escape(stem) for stem in stems)
    return re.compile(rf"\.(?:{names})\.[0-9a-f]{{{TOKEN_HEX}}}{re.escape(PARTIAL_SUFFIX)}")


def remove_stale_partials(plan: OutputPlan) -> list[Path]:
    """Remove partials of this output whose run died (unlocked); returns them."""
    stems = [plan.folder.name, plan.folder.name + ARCHIVE_SUFFIX]
    pattern = partial_pattern(stems)
    removed = []
    try:
        entries = sorted(os.scandir(plan.parent), key=lambda e: e.name)
    except OSError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and not entry.is_symlink() \
                and _remove_if_unlocked(Path(entry.path), entry.is_dir()):
            removed.append(Path(entry.path))
    return removed


def _remove_if_unlocked(path: Path, is_dir: bool) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if is_dir else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False  # gone meanwhile, or not ours to open
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # its run is alive
    partial = Partial(path, fd)
    partial.discard()
    return True


@dataclass
class Staging:
    """The locked partials of one run: the model folder and, with --tar, the archive."""

    plan: OutputPlan
    folder: Partial
    archive: Partial | None = None
    published: bool = False

    def publish(self) -> None:
        """Rename the partials into place (replacing what --force allows)."""
        with deferred_signals():
            check_targets(self.plan)  # the output may have changed while we worked
            self._replace_folder()
            if self.archive is not None:
                assert self.plan.archive is not None
                _rename(self.archive.path, self.plan.archive, replace=True)
            self.published = True

    def _replace_folder(self) -> None:
        target = self.plan.folder
        if not target.exists():
            _rename(self.folder.path, target, replace=False)
            return
        trash = _create_partial(self.plan.parent, target.name, folder=True)
        try:
            replaced = trash.path / "replaced"
            _rename(target, replaced, replace=False)
            try:
                _rename(self.folder.path, target, replace=False)
            except BaseException:
                os.rename(replaced, target)  # put the old folder back
                raise
        finally:
            trash.discard()

    def close(self) -> None:
        """Remove whatever was not published, then unlock."""
        for partial in (self.folder, self.archive):
            if partial is None:
                continue
            if self.published:
                partial.release()
            else:
                partial.discard()


def _rename(source: Path, target: Path, *, replace: bool) -> None:
    try:
        (os.replace if replace else os.rename)(source, target)
    except OSError as exc:
        raise StageError("write", f"cannot move the result to {target} "
                         f"({exc.strerror})") from None


@contextmanager
def staged_output(plan: OutputPlan) -> Iterator[Staging]:
    """Locked partials for `plan`, removed on any error or interrupt unless published."""
    remove_stale_partials(plan)
    staging = Staging(plan, _create_partial(plan.parent, plan.folder.name, folder=True))
    try:
        if plan.archive is not None:
            staging.archive = _create_partial(plan.parent, plan.archive.name, folder=False)
        yield staging
    finally:
        with deferred_signals():
            staging.close()
