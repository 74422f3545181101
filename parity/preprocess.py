"""One preprocessing for every tensor stage: letterbox a BGR frame, normalise.

For 640x480 frames and a 320x256 net this is exactly the firmware's path
(parity.unitv2); other sizes letterbox the same way into the net size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from parity.tensor_stats import same_bits
from parity.unitv2 import MEAN_BGR, NORM_BGR, Letterbox, letterbox_for, preprocess_frame_numpy


def frame_to_tensor(frame_bgr: np.ndarray, net_w: int, net_h: int,
                    mean_bgr: tuple[float, ...] = MEAN_BGR,
                    std_bgr: tuple[float, ...] | None = None) -> tuple[np.ndarray, Letterbox]:
    """Normalised 1x3xHxW float32 input and the geometry to map boxes back.

    Normalisation is the firmware's unless `std_bgr` (NanoDet config style,
    x = (pixel - mean) / std) says otherwise.
    """
    box = letterbox_for(frame_bgr.shape[1], frame_bgr.shape[0], (net_w, net_h))
    norm = NORM_BGR if std_bgr is None else tuple(1.0 / s for s in std_bgr)
    if std_bgr is not None and all(abs(a - b) < 1e-6 for a, b in zip(norm, NORM_BGR)):
        norm = NORM_BGR  # NanoDet's std 57.375, ... is the firmware's norm 0.017429, ...
    return preprocess_frame_numpy(frame_bgr, box, mean_bgr, norm), box


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
