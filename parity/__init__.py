"""Parity of a converted NanoDet model folder with its checkpoint, stage by stage.

Python API (README, "Python API"):

    import parity
    report = parity.check("model.pth", "unitv2/", config="model.yml")
    if not report.passed:
        print("first failing stage:", report.blamed_stage)
    report.write_json("parity.json")

Names are loaded on first use, so importing this package, or running
`parity --help`, loads no torch, onnx or ncnn.
"""

from __future__ import annotations

from importlib import import_module
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
