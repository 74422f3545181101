"""One preprocessing for every tensor stage: letterbox a BGR frame, normalise.

For the device's frames and net size this is exactly its firmware's path (a target's
``Device``, emulated in parity.unitv2); other sizes letterbox the same way into the net
size. Normalisation is the target's unless the model says otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from parity.targets import Target
from parity.targets.unitv2 import UNITV2
from parity.tensor_stats import same_bits
from parity.unitv2.geometry import Letterbox, letterbox_for
from parity.unitv2.preprocess import preprocess_frame_numpy


def frame_to_tensor(frame_bgr: np.ndarray, net_w: int, net_h: int,
                    mean_bgr: tuple[float, ...] | None = None,
                    std_bgr: tuple[float, ...] | None = None,
                    target: Target = UNITV2) -> tuple[np.ndarray, Letterbox]:
    """Normalised 1x3xHxW float32 input and the geometry to map boxes back.

    Normalisation is `target`'s unless `mean_bgr` / `std_bgr` (NanoDet config style,
    x = (pixel - mean) / std) say otherwise.
    """
    target_norm = target.normalisation
    box = letterbox_for(frame_bgr.shape[1], frame_bgr.shape[0], (net_w, net_h))
    mean = target_norm.mean_bgr if mean_bgr is None else mean_bgr
    norm = target_norm.norm_bgr if std_bgr is None else tuple(1.0 / s for s in std_bgr)
    if std_bgr is not None and all(abs(a - b) < 1e-6 for a, b in zip(norm, target_norm.norm_bgr)):
        norm = target_norm.norm_bgr  # NanoDet's std 57.375, ... is the norm 0.017429, ...
    return preprocess_frame_numpy(frame_bgr, box, mean, norm), box


def tensor_sha256(tensor: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tensor, dtype=np.float32).tobytes()).hexdigest()


@dataclass(frozen=True)
class SharedInput:
    """The one tensor every stage is fed, with its hash computed once."""

    tensor: np.ndarray
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", tensor_sha256(self.tensor))

    def sha256_of(self, tensor: np.ndarray) -> str:
        """`tensor`'s sha256; only hashed again when its bytes differ from the shared ones."""
        if same_bits(tensor, self.tensor):
            return self.sha256
        return tensor_sha256(tensor)
