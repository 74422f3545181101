"""Output layouts: which blob holds what, and how each blob is compared.

A stage's outputs come in the order its layout names them: `native` and
`legacy` as class/distance pairs per level (cls, dis, cls, dis, ...),
`plus-native` as one combined blob per image (class columns first).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Layout(StrEnum):
    NATIVE = "native"  # the checkpoint's own head: cls{i} (sigmoid) and dis{i} per level
    LEGACY = "legacy"  # the UnitV2 firmware's cls/dis blobs per stride
    PLUS_NATIVE = "plus-native"  # NanoDet-Plus's one output: classes then distances

    def is_class_blob(self, position: int) -> bool:
        """Whether the blob at `position` in the output order holds class scores."""
        return self is Layout.PLUS_NATIVE or position % 2 == 0

    def is_distance_blob(self, position: int) -> bool:
        """Whether the blob at `position` holds distance logits only."""
        return self is not Layout.PLUS_NATIVE and position % 2 == 1

    def class_columns(self, position: int, num_classes: int) -> int | None:
        """Columns of class scores in the blob at `position` (None: none)."""
        return num_classes if self.is_class_blob(position) else None

    def compared_form(self, position: int, value: np.ndarray) -> np.ndarray:
        """The blob as it is compared: legacy distance blobs as softmax per side.

        The firmware reads legacy distance logits through a softmax; near the
        probability floor a tiny change of a distance moves a logit by whole units
        without changing any box.
        """
        if self is not Layout.LEGACY or not self.is_distance_blob(position) \
                or value.ndim != 2 or value.shape[1] % 4:
            return value
        sides = value.reshape(len(value), 4, -1).astype(np.float64)
        sides -= sides.max(axis=2, keepdims=True)
        np.exp(sides, out=sides)
        sides /= sides.sum(axis=2, keepdims=True)
        return sides.reshape(value.shape)
