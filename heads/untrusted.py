"""Open files named by the user without blocking or reading without bound.

Only regular files are read: a FIFO, socket, device (/dev/zero) or directory is
refused before a byte is read, and opening never waits for a FIFO's writer.
"""

from __future__ import annotations

import os
import reprlib
import stat
import unicodedata
from pathlib import Path
from typing import BinaryIO

from common.errors import InputError

_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = 4
_SHOWN.maxlevel = 2


def shown(value: object) -> str:
    """A short one-line repr of an untrusted value, for error messages."""
    return _SHOWN.repr(value)


def has_control_character(text: str) -> bool:
    """True if `text` holds a control character (newline, escape, NUL...)."""
    return any(unicodedata.category(c) == "Cc" for c in text)


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def opening_error(path: Path, what: str, exc: OSError) -> InputError:
    """The one-line error for a file that could not be opened."""
    if isinstance(exc, FileNotFoundError):
        return InputError(path, f"no such {what} file")
    if isinstance(exc, IsADirectoryError):
        return InputError(path, f"is a directory, not a {what} file")
    if isinstance(exc, PermissionError):
        return InputError(path, f"cannot read {what}: permission denied")
    return InputError(path, f"cannot open {what}: {exc.strerror or exc}")


def nonblocking(path: str, flags: int) -> int:
    """An `open` opener that never waits for a FIFO's writer."""
    return os.open(path, flags | os.O_NONBLOCK)


def regular_only(handle: BinaryIO, path: Path, what: str) -> BinaryIO:
    """`handle` if it reads a regular file; else close it and raise InputError."""
    mode = os.fstat(handle.fileno()).st_mode
    if not stat.S_ISREG(mode):
        handle.close()
        kind = "a directory" if stat.S_ISDIR(mode) else _kind(mode)
        raise InputError(path, f"is {kind}, not a {what} file")
    return handle


def open_regular(path: Path, what: str) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file; InputError otherwise."""
    try:
        handle = open(path, "rb", opener=nonblocking)  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise opening_error(path, what, exc) from None
    return regular_only(handle, path, what)


def read_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """The whole of a small regular file; InputError if it is larger than `max_bytes`."""
    with open_regular(path, what) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(path, f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputError(path, f"is larger than {max_bytes // 1024} KiB: too large for a "
                         f"{what} file")
    return data
