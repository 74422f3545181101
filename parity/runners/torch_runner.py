"""A PyTorch module (an export wrapper) as a runner."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TorchRunner:
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
