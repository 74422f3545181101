"""SHA-256 of files and open streams, read in 1 MiB chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file at `path`."""
    with open(path, "rb") as f:
        return stream_sha256(f)


def stream_sha256(stream: BinaryIO) -> str:
    """Hex SHA-256 of what is left to read in `stream`."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()
