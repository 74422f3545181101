"""Property-based fuzzing of the checkpoint reader: random bytes and mutated real checkpoint
files (zip and legacy formats) give a checkpoint or one InputError - nothing else escapes."""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import InputError
from heads.checkpoint import read_checkpoint
from heads.loader import load_detector
from tests.conftest import seeded_state_dict, small_spec

# FUZZ_EXAMPLES=5000 for a longer hunt
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "250")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # pickled torch MAGIC_NUMBER


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    regions: tuple[tuple[int, int], ...]  # where mutations land: pickles, zip directory, all

    def __repr__(self) -> str:  # falsifying examples print the seeds: not their megabytes
        return f"Seed({self.name!r})"


def saved(obj: object, zipped: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zipped)
    return buffer.getvalue()


def seed(name: str, data: bytes) -> Seed:
    if not data.startswith(b"PK"):
        return Seed(name, data, ((0, min(len(data), 4096)), (0, len(data))))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickled = next(m for m in archive.infolist() if m.filename.endswith("/data.pkl"))
        directory = archive.start_dir
    end = pickled.header_offset + 30 + len(pickled.filename) + pickled.file_size
    return Seed(name, data, ((pickled.header_offset, end), (directory, len(data)),
                             (0, len(data))))


@pytest.fixture(scope="module")
def seeds() -> list[Seed]:
    tiny = {"state_dict": {"a.weight": torch.ones(2, 3), "a.bias": torch.arange(3.0)}}
    small = {"state_dict": seeded_state_dict(small_spec(True))}
    assert saved(tiny, zipped=False).startswith(LEGACY_MAGIC)
    return [seed(f"{name}-{'zip' if zipped else 'legacy'}", saved(obj, zipped))
            for name, obj in (("tiny", tiny), ("small-plus", small)) for zipped in (True, False)]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-checkpoint") / "model.pth"


def only_input_errors(path: Path, load: bool = False) -> None:
    """read_checkpoint (and with `load`, the whole loader) raise nothing but InputError."""
    try:
        checkpoint = read_checkpoint(path)
        if load:
            load_detector(path)
    except InputError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(f"{path}: "), text
        return
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor)
               for k, v in checkpoint.state_dict.items())


@FUZZ
@given(prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", LEGACY_MAGIC, b"c", b"(d"]),
       body=st.binary(max_size=600))
def test_fuzz_random_bytes(scratch, prefix, body):
    scratch.write_bytes(prefix + body)
    only_input_errors(scratch)


@st.composite
def mutations(draw: st.DrawFn, seeds: list[Seed]) -> bytes:
    """A real small checkpoint with a few bytes set, cut out or inserted, maybe truncated."""
    chosen = draw(st.sampled_from(seeds))
    data = bytearray(chosen.data)
    for _ in range(draw(st.integers(1, 4))):
        low, high = draw(st.sampled_from(chosen.regions))
        at = draw(st.integers(low, max(low, min(high, len(data)) - 1)))
        kind = draw(st.sampled_from(["set", "cut", "insert"]))
        if kind == "set":
            data[at:at + 1] = bytes([draw(st.integers(0, 255))])
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.integers(0, 9)) == 0:
        del data[draw(st.integers(0, len(data))):]
    return bytes(data)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_checkpoints(scratch, seeds, data):
    scratch.write_bytes(data.draw(mutations(seeds)))
    only_input_errors(scratch, load=True)
