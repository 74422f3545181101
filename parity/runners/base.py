"""The one interface every stage's backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Runner(Protocol):
    name: str
    output_names: list[str]

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        """Run one normalised 1x3xHxW float32 tensor; outputs without the batch dim."""
        ...
