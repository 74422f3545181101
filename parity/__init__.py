"""Parity of a converted NanoDet model folder with its checkpoint, stage by stage.

Python API (README, "Python API"):

    import parity
    report = parity.check("model.pth", "unitv2/", config="model.yml")
    if not report.passed:
        print("first failing stage:", report.blamed_stage)
    report.write_json("parity.json")

Names are loaded on first use, so importing this package, or running
`parity --help`, loads no torch, onnx or ncnn. `parity.check` is always the API
function (parity/api.py), although parity/check.py, the stage runner, is also a
submodule: import from that one with `from parity.check import ...`.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "check": "parity.api",
    "ParityReport": "parity.api",
    "Report": "parity.report_types",
    "read_report": "parity.report",
    "InputError": "common.errors",
}

__all__ = ["InputError", "ParityReport", "Report", "check", "read_report"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'parity' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(ModuleType):
    """This package, whose `check` attribute stays the API function when the import
    system binds the submodule parity.check to it."""

    @property
    def check(self) -> Any:
        return self.__dict__.get("_check_function") or __getattr__("check")

    @check.setter
    def check(self, value: Any) -> None:
        if not isinstance(value, ModuleType):  # a caller's replacement (e.g. a test's patch)
            self.__dict__["_check_function"] = value


sys.modules[__name__].__class__ = _Package
