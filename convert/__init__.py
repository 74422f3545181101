"""The converter: checkpoint -> ONNX -> NCNN model folder for the UnitV2 (top layer).

Python API (README, "Python API"): `convert.convert(checkpoint, **options)`
(alias of `convert_checkpoint`, the options of ConvertOptions as keywords)
returns a ConvertResult: `folder`, `manifest`, `verification` (None with
verify=False; else `.passed` and the parity report as `.check.report`) and
`exit_code` (what the `convert` command would exit with). Bad input raises
common.errors.InputError. `convert_model(checkpoint, ConvertOptions(...))` is
the same with an options value; convert/pipeline.py lists the steps they
compose. The
package imports torch only when that API is first used, so `python -m convert`
can answer Ctrl-C during its start-up (see common/entrypoints.py). ONNX
Runtime's telemetry, which writes `$TMPDIR/.ses` and files under ~/.cache, is
switched off unless ORT_DISABLE_TELEMETRY is already set.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# public name -> the name convert/pipeline.py defines it under
_EXPORTS = {"ConvertOptions": "ConvertOptions", "ConvertResult": "ConvertResult",
            "convert": "convert_checkpoint", "convert_checkpoint": "convert_checkpoint",
            "convert_model": "convert_model"}

__all__ = ["ConvertOptions", "ConvertResult", "convert", "convert_checkpoint", "convert_model"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from convert import pipeline

        return getattr(pipeline, _EXPORTS[name])
    raise AttributeError(f"module 'convert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
