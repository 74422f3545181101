"""The bundled real photos (640x480, from scikit-image's data) and image-folder reading."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def bundled_images() -> list[Path]:
    folder = resources.files("parity") / "data" / "images"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(IMAGE_SUFFIXES))


def read_bgr(path: Path) -> np.ndarray | None:
    """A 3-channel uint8 BGR image, or None when it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def load_frames(paths: list[Path]) -> tuple[list[tuple[str, np.ndarray]], list[Path]]:
    """(name, BGR frame) for each readable image, and the paths that could not be read."""
    frames, unreadable = [], []
    for path in paths:
        image = read_bgr(path)
        if image is None:
            unreadable.append(path)
        else:
            frames.append((path.name, image))
    return frames, unreadable
