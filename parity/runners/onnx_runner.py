"""ONNX Runtime (CPU) as a runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# ONNX Runtime 1.32 writes $TMPDIR/.ses and files under ~/.cache unless told not to
# (the entry points set this too; here it covers callers of the Python API).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # after the telemetry switch

from common.errors import InputError
from common.threads import onnxruntime_options


class OnnxRunner:
    def __init__(self, model: Path, input_name: str, output_names: list[str], name: str = "onnx",
                 threads: int = 1):
        self.name = name
        self.input_name = input_name
        self.output_names = list(output_names)
        options = onnxruntime_options(threads)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise InputError(model, f"onnxruntime cannot load it: {str(exc).splitlines()[0]}") \
                from None
        known = {o.name for o in self.session.get_outputs()}
        missing = [n for n in self.output_names if n not in known]
        if missing:
            raise InputError(model, f"has no output named {missing[0]!r}")

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, {self.input_name: feed})
        return {name: out[0] for name, out in zip(self.output_names, outputs)}
