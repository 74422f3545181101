"""Seeded synthetic camera frames built from the bundled photos.

Zoomed crops give frame-filling objects (the stride-64 level's work), mosaics
give many small ones; both are real image content, so detections are real.
"""

from __future__ import annotations

import cv2
import numpy as np

from parity.images import FRAME_H, FRAME_W, bundled_images, read_bgr


def _photos() -> list[np.ndarray]:
    photos = [read_bgr(p) for p in bundled_images()]
    return [p for p in photos if p is not None]


def _zoom(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    fraction = rng.uniform(0.45, 0.9)
    cw, ch = int(w * fraction), int(h * fraction)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    frame = cv2.resize(photo[y0:y0 + ch, x0:x0 + cw], (FRAME_W, FRAME_H),
                       interpolation=cv2.INTER_LINEAR)
    return frame[:, ::-1].copy() if rng.random() < 0.5 else frame


def _mosaic(photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    n = int(rng.choice([2, 3]))
    tile_w, tile_h = FRAME_W // n, FRAME_H // n
    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    for row in range(n):
        for col in range(n):
            photo = photos[int(rng.integers(len(photos)))]
            frame[row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w] = \
                cv2.resize(photo, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
    return frame


def synthetic_frames(count: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """`count` 640x480 BGR frames, alternating zoomed crops and mosaics."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    frames = []
    for index in range(count):
        if index % 2 == 0:
            frame = _zoom(photos[int(rng.integers(len(photos)))], rng)
            kind = "zoom"
        else:
            frame, kind = _mosaic(photos, rng), "mosaic"
        frames.append((f"synthetic-{seed}-{index:03d}-{kind}", frame))
    return frames


def default_frames(synthetic: int = 20, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """The bundled photos followed by `synthetic` seeded frames."""
    photos = [(p.name, image) for p in bundled_images() if (image := read_bgr(p)) is not None]
    return photos + synthetic_frames(synthetic, seed)
