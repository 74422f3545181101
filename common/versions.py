"""Versions of this tool and the libraries a conversion or a parity run depends on."""

from __future__ import annotations

import importlib.metadata
from typing import Any

LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxsim", "pnnx", "ncnn", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict[str, Any]:
    return {"nanodet-unitv2": _version("nanodet-unitv2"),
            "libraries": {name: _version(name) for name in LIBRARIES}}
