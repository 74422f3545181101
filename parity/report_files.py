"""Where reports go: checked before any work, written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from common.errors import InputError


def check_report_paths(outputs: dict[str, Path | None], inputs: Iterable[Path]) -> None:
    """Refuse report paths that cannot be written or would overwrite an input.

    `outputs` maps an option (`--json`) to its path; `inputs` are files and
    folders the run reads, which a report must never replace or land in.
    """
    seen: dict[Path, str] = {}
    read = [Path(p).resolve() for p in inputs]
    for option, path in outputs.items():
        if path is None:
            continue
        target = path.resolve()
        if target in seen:
            raise InputError(path, f"{option} and {seen[target]} name the same file")
        seen[target] = option
        if any(target == p or p in target.parents for p in read if p.is_dir()) \
                or target in read:
            raise InputError(path, f"{option} would overwrite or write into an input")
        parent = target.parent
        if not parent.is_dir():
            raise InputError(path, f"{option}: the folder {parent} does not exist")
        if target.is_dir():
            raise InputError(path, f"{option}: is a directory")
        if target.exists() and not target.is_file():
            raise InputError(path, f"{option}: exists and is not a regular file")
        if not os.access(parent, os.W_OK | os.X_OK) or \
                (target.exists() and not os.access(target, os.W_OK)):
            raise InputError(path, f"{option}: not writable")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it into place."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                         dir=path.resolve().parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InputError(path, f"cannot write: {exc.strerror or exc}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
