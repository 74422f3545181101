"""PyTorch runners: the checkpoint's own head, and an export wrapper on top of it.

Both share one forward pass of the checkpoint per feed (`SharedForward`): the
wrapper's stage checks the layout the wrapper computes from the same logits.
"""

from __future__ import annotations

import numpy as np
import torch

from heads.decode import levels_from_logits
from heads.detector import LevelLogits, NanoDet


class SharedForward:
    """The checkpoint's raw logits for the last feed seen, computed once."""

    def __init__(self, model: NanoDet):
        self.model = model.eval()
        self._feed: np.ndarray | None = None
        self._logits: LevelLogits | None = None

    @torch.no_grad()
    def __call__(self, feed: np.ndarray) -> LevelLogits:
        if self._feed is None or self._feed.shape != feed.shape \
                or not np.array_equal(self._feed, feed):
            self._logits = self.model(torch.from_numpy(np.ascontiguousarray(feed,
                                                                            np.float32)))
            self._feed = feed.copy()
        return self._logits


class TorchRunner:
    """An export wrapper (anything with `from_levels`), outputs named as the layout's blobs."""

    def __init__(self, wrapper: torch.nn.Module, output_names: list[str], forward: SharedForward,
                 name: str = "torch-legacy"):
        self.name = name
        self.wrapper = wrapper.eval()
        self.forward = forward
        self.output_names = list(output_names)

    @torch.no_grad()
    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.wrapper.from_levels(self.forward(feed))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out[0].numpy() for name, out in zip(self.output_names, outputs)}


class NativeTorchRunner:
    """The checkpoint's own head: per level `cls{i}` (sigmoid) and `dis{i}` rows."""

    def __init__(self, forward: SharedForward, name: str = "torch"):
        self.name = name
        self.forward = forward
        self.strides = forward.model.spec.head.strides
        self.output_names = [f"{kind}{i}" for i in range(len(self.strides))
                             for kind in ("cls", "dis")]

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        outputs: dict[str, np.ndarray] = {}
        for i, level in enumerate(levels_from_logits(self.forward(feed), self.strides)):
            outputs[f"cls{i}"], outputs[f"dis{i}"] = level.cls, level.dis
        return outputs
