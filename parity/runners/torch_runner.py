"""PyTorch runners: an export wrapper as it would be exported, and the checkpoint itself."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from heads.decode import levels_from_logits
from heads.detector import NanoDet


class TorchRunner:
    """Any module whose outputs are the layout's blobs (the export wrappers)."""

    def __init__(self, module: nn.Module, output_names: list[str], name: str = "torch-legacy"):
        self.name = name
        self.module = module.eval()
        self.output_names = list(output_names)

    @torch.no_grad()
    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.module(torch.from_numpy(np.ascontiguousarray(feed, dtype=np.float32)))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out[0].numpy() for name, out in zip(self.output_names, outputs)}


class NativeTorchRunner:
    """The checkpoint's own head: per level `cls{i}` (sigmoid) and `dis{i}` rows."""

    def __init__(self, model: NanoDet, name: str = "torch"):
        self.name = name
        self.model = model.eval()
        self.strides = model.spec.head.strides
        self.output_names = [f"{kind}{i}" for i in range(len(self.strides))
                             for kind in ("cls", "dis")]

    @torch.no_grad()
    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        logits = self.model(torch.from_numpy(np.ascontiguousarray(feed, dtype=np.float32)))
        outputs: dict[str, np.ndarray] = {}
        for i, level in enumerate(levels_from_logits(logits, self.strides)):
            outputs[f"cls{i}"], outputs[f"dis{i}"] = level.cls, level.dis
        return outputs
