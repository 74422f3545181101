"""Images as the UnitV2 would see them: any photo becomes a 640x480 camera frame.

The UnitV2's camera delivers 640x480 BGR frames, and every stage of a check
(and `convert`'s verification) starts from such a frame. A photo of another
size or aspect is centre-cropped to 4:3 and resized to 640x480 (area
averaging when shrinking, bilinear when enlarging); a 640x480 photo is used
as it is. Photos are probed (header only) before any work and decoded one at a
time, when their turn comes; those that cannot stand for a frame are skipped
with a reason:

* more than `MAX_IMAGE_PIXELS` pixels (decoding would take gigabytes),
* a 4:3 crop smaller than `MIN_CROP` (a few pixels blown up to a frame say
  nothing about the model),
* not decodable as an image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from parity.targets.unitv2 import DEVICE

FRAME_W, FRAME_H = DEVICE.frame_size  # the camera frame every photo becomes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_IMAGE_PIXELS = 50_000_000
MIN_CROP = (64, 48)


class UnusableImage(Exception):
    """A photo that cannot become a camera frame; the message says why."""


@dataclass(frozen=True)
class CameraFrame:
    """A 640x480 BGR frame and what it was made from."""

    name: str
    frame: np.ndarray
    original_size: tuple[int, int]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.frame).tobytes()).hexdigest()


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the centred 4:3 crop of a width x height photo."""
    if width * FRAME_H > height * FRAME_W:  # wider than 4:3
        crop_w, crop_h = height * FRAME_W // FRAME_H, height
    else:
        crop_w, crop_h = width, width * FRAME_H // FRAME_W
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def camera_frame(image: np.ndarray) -> np.ndarray:
    """The 640x480 frame the UnitV2's camera would deliver of `image` (BGR uint8)."""
    height, width = image.shape[:2]
    if (width, height) == (FRAME_W, FRAME_H):
        return image
    x, y, crop_w, crop_h = crop_box(width, height)
    if crop_w < MIN_CROP[0] or crop_h < MIN_CROP[1]:
        raise UnusableImage(f"{width}x{height} is too small for a camera frame (its 4:3 crop "
                            f"{crop_w}x{crop_h} is under {MIN_CROP[0]}x{MIN_CROP[1]})")
    crop = image[y:y + crop_h, x:x + crop_w]
    shrink = crop_w >= FRAME_W
    return cv2.resize(crop, (FRAME_W, FRAME_H),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _header_size(path: Path) -> tuple[int, int]:
    """Width and height from the file's header alone (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # lazy: reads the header only
            return image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError):
        raise UnusableImage("cannot be decoded as an image") from None


def probe(path: Path) -> None:
    """Raise UnusableImage when the header already shows `path` cannot become a frame."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the cap below is ours
    try:
        width, height = _header_size(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if width * height > MAX_IMAGE_PIXELS:
        raise UnusableImage(f"{width}x{height} has more than {MAX_IMAGE_PIXELS:,} pixels")
    _, _, crop_w, crop_h = crop_box(width, height)
    if crop_w < MIN_CROP[0] or crop_h < MIN_CROP[1]:
        raise UnusableImage(f"{width}x{height} is too small for a camera frame")


def read_bgr(path: Path) -> np.ndarray | None:
    """A 3-channel uint8 BGR image as decoded, or None when it cannot be decoded."""
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return image if image is not None and image.size else None


@dataclass(frozen=True)
class PhotoFile:
    """A photo on disk, decoded only when `load` is called."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def check(self) -> None:
        """Raise UnusableImage when the file or its header already rules it out."""
        if not self.path.is_file():  # a FIFO or device would block or never end
            raise UnusableImage("not a regular file")
        probe(self.path)

    def load(self) -> CameraFrame:
        self.check()
        image = read_bgr(self.path)
        if image is None:
            raise UnusableImage("cannot be decoded as an image")
        return CameraFrame(self.name, camera_frame(image),
                           (int(image.shape[1]), int(image.shape[0])))


@dataclass(frozen=True)
class InMemoryPhoto:
    """A photo already in memory (a synthetic frame, or one a caller passes)."""

    name: str
    image: np.ndarray

    def load(self) -> CameraFrame:
        image = np.asarray(self.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UnusableImage(f"not a BGR uint8 image (got {image.dtype} {image.shape})")
        return CameraFrame(self.name, camera_frame(image),
                           (int(image.shape[1]), int(image.shape[0])))


Photo = PhotoFile | InMemoryPhoto


def photos_in(folder: Path) -> list[PhotoFile]:
    """The image files of `folder` (by suffix), sorted by name; nothing is decoded."""
    return [PhotoFile(p) for p in sorted(folder.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]


def in_memory(frames: Sequence[tuple[str, np.ndarray]]) -> list[InMemoryPhoto]:
    return [InMemoryPhoto(name, image) for name, image in frames]


def bundled_images() -> list[Path]:
    folder = resources.files("parity") / "data" / "images"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(IMAGE_SUFFIXES))


class LazyFrames(Mapping[str, np.ndarray]):
    """name -> camera frame, decoding each photo when it is asked for (HTML overlays)."""

    def __init__(self, photos: Sequence[Photo]):
        self._photos = {photo.name: photo for photo in photos}

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._photos[name].load().frame
        except UnusableImage:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._photos)

    def __len__(self) -> int:
        return len(self._photos)
