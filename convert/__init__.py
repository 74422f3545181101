"""The converter: checkpoint -> ONNX -> NCNN model folder for the UnitV2 (top layer).

`convert_checkpoint(...)` is the Python API of the `convert` command
(`convert_model(checkpoint, ConvertOptions(...))` the same with an options
value; convert/pipeline.py lists the steps they compose). The
package imports torch only when that API is first used, so `python -m convert`
can answer Ctrl-C during its start-up (see common/entrypoints.py). ONNX
Runtime's telemetry, which writes `$TMPDIR/.ses` and files under ~/.cache, is
switched off unless ORT_DISABLE_TELEMETRY is already set.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__all__ = ["ConvertOptions", "ConvertResult", "convert_checkpoint", "convert_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from convert import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'convert' has no attribute {name!r}")
