"""Hostile cases: photos of any size and report paths of `parity check` (tests/hostile/harness.py).

The real NanoDet-m `real-legacy.pth` (with its config `legacy.yml`) matches
`real-legacy-unitv2`, a folder that passes a check: cases that must exit 0
need a real model (random weights do not pass).
"""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np

from tests.hostile.harness import Case, Workspace
from tests.test_photo_sizes import png_header_only


def check(ws: Workspace, *extra: object) -> list[object]:
    return ["check", ws["real-legacy.pth"], ws["real-legacy-unitv2"], "--config",
            ws["legacy.yml"], "-q", *extra]


def folder_with(ws: Workspace, files: dict[str, bytes | np.ndarray], keep_photos: int = 0
                ) -> None:
    """ws.root/photos with `keep_photos` of the two 640x480 photos and `files`."""
    folder = ws.root / "photos"
    folder.mkdir()
    for path in sorted(ws["images"].iterdir())[:keep_photos]:
        shutil.copy(path, folder / path.name)
    for name, content in files.items():
        if isinstance(content, np.ndarray):
            cv2.imwrite(str(folder / name), content)
        else:
            (folder / name).write_bytes(content)


def grey(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 100, np.uint8)


def photos(ws: Workspace) -> list[object]:
    return ["--images", ws.root / "photos"]


def fifo_photo(ws: Workspace) -> None:
    folder_with(ws, {}, keep_photos=1)
    os.mkfifo(ws.root / "photos" / "pipe.jpg")


CASES: list[Case] = [
    Case("images-only-a-pixel-bomb", "parity", lambda ws: check(ws, *photos(ws)),
         setup=lambda ws: folder_with(ws, {"bomb.png": png_header_only(60000, 60000)}),
         mentions=lambda ws: [ws.root / "photos", "no usable image"]),
    Case("images-bomb-beside-a-photo-is-skipped", "parity",
         lambda ws: check(ws, *photos(ws)), exit_code=0,
         setup=lambda ws: folder_with(ws, {"bomb.png": png_header_only(60000, 60000)}, 1)),
    Case("images-only-degenerate", "parity", lambda ws: check(ws, *photos(ws)),
         setup=lambda ws: folder_with(ws, {"1x1.png": grey(1, 1), "8x6.png": grey(8, 6)}),
         mentions=lambda ws: ["no usable image", "2 skipped"]),
    Case("images-degenerate-strict", "parity", lambda ws: check(ws, *photos(ws), "--strict"),
         setup=lambda ws: folder_with(ws, {"8x6.png": grey(8, 6)}, 1),
         mentions=lambda ws: ["8x6.png", "too small"]),
    Case("images-wide-strip-strict", "parity", lambda ws: check(ws, *photos(ws), "--strict"),
         setup=lambda ws: folder_with(ws, {"strip.png": grey(5000, 20)}, 1),
         mentions=lambda ws: ["strip.png", "too small"]),
    Case("images-text-named-jpg-only", "parity", lambda ws: check(ws, *photos(ws)),
         setup=lambda ws: folder_with(ws, {"notes.jpg": b"just text\n"}),
         mentions=lambda ws: ["no usable image"]),
    Case("images-truncated-jpeg-strict", "parity", lambda ws: check(ws, *photos(ws), "--strict"),
         setup=lambda ws: folder_with(ws, {"cut.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF"}, 1),
         mentions=lambda ws: ["cut.jpg", "(--strict)"]),
    Case("images-fifo-named-jpg-is-skipped", "parity", lambda ws: check(ws, *photos(ws)),
         exit_code=0, setup=fifo_photo),
    Case("images-is-a-file", "parity",
         lambda ws: check(ws, "--images", ws["images"] / "astronaut.jpg"),
         mentions=lambda ws: ["astronaut.jpg", "no such image folder"]),
    Case("images-folder-without-images", "parity", lambda ws: check(ws, *photos(ws)),
         setup=lambda ws: folder_with(ws, {"readme.txt": b"hello"}),
         mentions=lambda ws: [ws.root / "photos", "holds no images"]),
    Case("synthetic-negative", "parity", lambda ws: check(ws, "--synthetic", "-5"),
         mentions=lambda ws: ["--synthetic"]),
    Case("synthetic-zero-photos-only", "parity", lambda ws: check(ws, "--synthetic", "0"),
         exit_code=0),
    Case("shard-selects-nothing", "parity",
         lambda ws: check(ws, "--images", ws["images"], "--shard", "5/1000"),
         mentions=lambda ws: ["--shard", "5/1000", "empty"]),
    Case("shard-zero", "parity", lambda ws: check(ws, "--shard", "0/2"),
         mentions=lambda ws: ["--shard"]),
    Case("shard-not-numbers", "parity", lambda ws: check(ws, "--shard", "a/b"),
         mentions=lambda ws: ["--shard"]),
    Case("json-into-missing-folder", "parity",
         lambda ws: check(ws, "--json", ws.root / "no" / "r.json"),
         mentions=lambda ws: [ws.root / "no" / "r.json", "does not exist"]),
    Case("json-is-a-directory", "parity", lambda ws: check(ws, "--json", ws["images"]),
         mentions=lambda ws: [ws["images"]]),
    Case("json-over-the-checkpoint", "parity",
         lambda ws: check(ws, "--json", ws["real-legacy.pth"]),
         mentions=lambda ws: [ws["real-legacy.pth"], "input"]),
    Case("junit-into-the-model-folder", "parity",
         lambda ws: check(ws, "--junit", ws["real-legacy-unitv2"] / "r.xml"),
         mentions=lambda ws: ["r.xml", "input"]),
    Case("json-and-junit-same-file", "parity",
         lambda ws: check(ws, "--json", ws.root / "r", "--junit", ws.root / "r"),
         mentions=lambda ws: ["same file"]),
    Case("html-below-a-file", "parity",
         lambda ws: check(ws, "--html", ws["real-legacy.pth"] / "r.html"),
         mentions=lambda ws: ["r.html"]),
    Case("workers-zero", "parity", lambda ws: check(ws, "--workers", "0"),
         mentions=lambda ws: ["--workers"]),
    Case("reports-written-whole", "parity",
         lambda ws: check(ws, "--synthetic", "0", "--json", ws.root / "out" / "r.json",
                          "--junit", ws.root / "out" / "r.xml"),
         exit_code=0, setup=lambda ws: (ws.root / "out").mkdir(), creates=("out",)),
    Case("merge-output-into-missing-folder", "parity",
         lambda ws: ["merge", ws["real-legacy.pth"], "-o", ws.root / "no" / "m.json"],
         mentions=lambda ws: [ws.root / "no" / "m.json"]),
]
