"""Read a pickle's opcodes without running it, to say why torch refused a file.

`torch.load(weights_only=True)` fails the same way on a malicious pickle and on
a file that is no pickle at all (a text file, random bytes). A scan of the
opcodes (pickletools parses, it never imports or calls) tells them apart: only
a whole, well-formed pickle that imports a global torch does not allow asks to
build objects.
"""

from __future__ import annotations

import pickletools
import re
import warnings
from dataclasses import dataclass
from typing import IO

MAX_SCAN_BYTES = 64 << 20
MAX_LINE_BYTES = 64 << 10
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z", re.ASCII)
_IMPORTING = {"GLOBAL", "INST", "STACK_GLOBAL"}


@dataclass(frozen=True)
class PickleScan:
    complete: bool  # well-formed up to its STOP opcode
    foreign: str | None  # the first imported global torch does not allow
    longs: tuple[int, ...]  # LONG1 values (the legacy torch format's magic number)


class _Bounded:
    """A read-only view of a stream that never hands out more than a budget of bytes."""

    def __init__(self, stream: IO[bytes], budget: int = MAX_SCAN_BYTES):
        self.stream, self.left = stream, budget

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.stream.read(size)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self.stream.readline(min(MAX_LINE_BYTES, self.left))
        self.left -= len(data)
        return data


def _allowed_globals() -> frozenset[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        return frozenset(_get_allowed_globals())
    except (ImportError, AttributeError):  # a torch without the private table
        return frozenset({"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                          "torch._utils._rebuild_parameter", "torch.FloatStorage",
                          "torch.HalfStorage", "torch.LongStorage"})


def _imported(name: str, arg: object) -> str | None:
    """'module.name' of an importing opcode; None if it names no importable global."""
    if name == "STACK_GLOBAL":
        return "a global named on the stack"
    parts = str(arg).split(" ")
    if len(parts) != 2 or not all(_DOTTED_NAME.match(p) for p in parts):
        return None
    return ".".join(parts)


def scan_pickle(stream: IO[bytes]) -> PickleScan:
    """Scan one pickle from the stream's position up to its STOP opcode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # escape-sequence notes on garbage strings
        return _scan(stream)


def _scan(stream: IO[bytes]) -> PickleScan:
    allowed = _allowed_globals()
    foreign: str | None = None
    longs: list[int] = []
    try:
        for opcode, arg, _ in pickletools.genops(_Bounded(stream)):
            if opcode.name in _IMPORTING:
                target = _imported(opcode.name, arg)
                if target is None:
                    return PickleScan(False, foreign, tuple(longs))
                if target not in allowed and foreign is None:
                    foreign = target
            elif opcode.name == "LONG1" and isinstance(arg, int):
                longs.append(arg)
    except Exception:  # noqa: BLE001 - any parse failure means: not a well-formed pickle
        return PickleScan(False, foreign, tuple(longs))
    return PickleScan(True, foreign, tuple(longs))


def scan_pickles(stream: IO[bytes], limit: int = 5) -> list[PickleScan]:
    """Consecutive pickles (the legacy torch format writes several), up to the first broken one."""
    scans: list[PickleScan] = []
    while len(scans) < limit:
        scans.append(scan_pickle(stream))
        if not scans[-1].complete:
            break
    return scans
