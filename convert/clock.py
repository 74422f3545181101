"""The stages of a conversion, named and timed as they run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common.errors import StageError, ToolError

STAGES = ("load", "wrap", "onnx-export", "onnxsim", "pnnx", "lint", "write", "verify")


class StageClock:
    """Names each stage as it runs; errors from a stage carry its name.

    `report` gets '[n/8] <stage> ...' as a stage starts and '[n/8] <stage> done in
    <s>s' when it ends."""

    def __init__(self, report: Callable[[str], None] | None = None):
        self.report = report or (lambda line: None)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        number = STAGES.index(name) + 1
        self.report(f"[{number}/{len(STAGES)}] {name} ...")
        start = time.perf_counter()
        try:
            yield
        except ToolError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure in a stage is one line
            raise StageError(name, f"{type(exc).__name__}: {exc}") from None
        self.timings[name] = round(time.perf_counter() - start, 3)
        self.report(f"[{number}/{len(STAGES)}] {name} done in {self.timings[name]:.1f}s")
