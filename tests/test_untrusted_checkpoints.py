"""Untrusted checkpoints and class-name files: one InputError naming the file and the
problem, never another exception; a file that is no checkpoint is not called malicious."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import random
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from common.errors import InputError
from heads.checkpoint import read_checkpoint
from heads.loader import load_detector, read_class_names
from tests.conftest import PLUS_CFG, seeded_state_dict, small_spec

NOT_A_CHECKPOINT = "not a PyTorch checkpoint"


def refused(action, path: Path, *phrases: str) -> str:
    with pytest.raises(InputError) as caught:
        action()
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    for phrase in phrases:
        assert phrase in text, text
    return text


def refused_checkpoint(path: Path, *phrases: str) -> str:
    return refused(lambda: read_checkpoint(path), path, *phrases)


def saved(tmp_path: Path, obj: object, name: str = "ckpt.pth", **kwargs) -> Path:
    path = tmp_path / name
    torch.save(obj, path, **kwargs)
    return path


@contextlib.contextmanager
def fifo_with_writer(path: Path) -> Iterator[Path]:
    """A FIFO with a writer waiting, so that a reader that should not open it cannot hang."""
    os.mkfifo(path)

    def write() -> None:
        with contextlib.suppress(OSError):  # the reader may be gone already
            path.write_bytes(b"x")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield path
    finally:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # lets the writer finish
        writer.join(timeout=5)


@pytest.fixture(scope="module")
def plus_sd() -> dict[str, torch.Tensor]:
    return seeded_state_dict(small_spec(True))


@pytest.mark.parametrize("content", [
    b"hello world\n",
    b"cat\ndog\nbird\n",  # a class-names file: its first bytes read as a pickle GLOBAL
    PLUS_CFG.read_bytes(),
    random.Random(0).randbytes(5000),
    bytes(4096),
], ids=["text", "names-file", "yaml-config", "random-bytes", "zeros"])
def test_other_files_are_not_checkpoints_and_not_malicious(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    text = refused_checkpoint(path, NOT_A_CHECKPOINT)
    assert "refused" not in text


def test_a_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}, protocol=5))
    refused_checkpoint(path, NOT_A_CHECKPOINT, "torch.save did not write")


def test_a_protocol_0_code_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    refused_checkpoint(path, "refused", "nothing was executed")
    assert not marker.exists()


def test_special_files_are_refused_without_reading(tmp_path):
    refused_checkpoint(Path("/dev/zero"), "is a character device")
    refused_checkpoint(tmp_path, "is a directory")
    refused_checkpoint(tmp_path / "nope.pth", "no such checkpoint file")
    with fifo_with_writer(tmp_path / "fifo.pth") as fifo:
        refused_checkpoint(fifo, "is a FIFO")


def test_empty_truncated_and_foreign_zips(tmp_path, plus_sd):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    refused_checkpoint(empty, "empty file", NOT_A_CHECKPOINT)
    whole = saved(tmp_path, {"state_dict": plus_sd}).read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole[: len(whole) // 2])
    refused_checkpoint(truncated, "truncated or corrupt")
    foreign = tmp_path / "foreign.pth"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("notes.txt", "hello")
    refused_checkpoint(foreign, NOT_A_CHECKPOINT, "zip archive without the data.pkl")


def test_a_zip_needing_an_unknown_zip_version(tmp_path, plus_sd):
    """Found by fuzzing: zipfile raises NotImplementedError for it."""
    path = saved(tmp_path, {"state_dict": plus_sd})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        data[archive.start_dir + 6] = 64  # "version needed to extract": 6.4
    path.write_bytes(data)
    refused_checkpoint(path, "truncated or corrupt", "zip file version 6.4")


def test_legacy_non_zip_checkpoint_loads_the_same_weights(tmp_path, plus_sd):
    path = saved(tmp_path, {"state_dict": plus_sd}, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] != b"PK"
    loaded = load_detector(path)
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in plus_sd.items())


@pytest.mark.parametrize("edit, phrases", [
    (lambda sd: {}, ["state_dict is empty"]),
    (lambda sd: {**sd, "extra": {"nested": torch.zeros(1)}}, ["'extra' is a dict, not a tensor"]),
    (lambda sd: {**sd, 5: torch.zeros(1)}, ["key 5 is not a string"]),
    (lambda sd: {**sd, "head.gfl_cls.0.bias": torch.zeros(35, device="meta")},
     ["head.gfl_cls.0.bias", "meta device"]),
    (lambda sd: {**sd, "head.gfl_cls.0.bias": torch.zeros(35).to_sparse()},
     ["head.gfl_cls.0.bias", "sparse"]),
    (lambda sd: {**sd, "head.gfl_cls.0.bias": torch.zeros(1).expand(10**8)},
     ["head.gfl_cls.0.bias", "claims shape (100000000,) over a storage of 4 bytes"]),
    (lambda sd: {**sd, "head.gfl_cls.0.bias": torch.full((35,), float("nan"))},
     ["head.gfl_cls.0.bias", "35 NaN/Inf"]),
], ids=["empty", "nested", "int-key", "meta", "sparse", "expanded-view", "nan"])
def test_state_dict_values_are_checked(tmp_path, plus_sd, edit, phrases):
    path = saved(tmp_path, {"state_dict": edit(dict(plus_sd))})
    refused_checkpoint(path, *phrases)


def test_int_weights_are_refused(tmp_path, plus_sd):
    ints = {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in plus_sd.items()}
    path = saved(tmp_path, {"state_dict": ints})
    refused(lambda: load_detector(path), path, "holds torch.int32 values")


@pytest.mark.parametrize("key", ["backbone.stage2.0.branch1.2.weight",
                                 "head.distribution_project.project", "head.gfl_cls.0.weight",
                                 "fpn.reduce_layers.0.conv.weight"])
def test_a_0d_tensor_where_a_weight_should_be(tmp_path, plus_sd, key):
    path = saved(tmp_path, {"state_dict": {**plus_sd, key: torch.tensor(1.0)}})
    refused(lambda: load_detector(path), path, key, "has shape ()")


def test_a_0d_tensor_against_a_config_names_the_key(tmp_path, plus_sd):
    cfg = yaml.safe_load(PLUS_CFG.read_text())
    spec = small_spec(True)
    cfg["model"]["arch"]["backbone"]["model_size"] = "0.5x"
    cfg["model"]["arch"]["fpn"].update(in_channels=[48, 96, 192], out_channels=32)
    cfg["model"]["arch"]["head"].update(num_classes=3, input_channel=32, feat_channels=32)
    cfg["class_names"] = list(spec.class_names)
    config = tmp_path / "small.yml"
    config.write_text(yaml.safe_dump(cfg))
    assert load_detector(saved(tmp_path, {"state_dict": plus_sd}), config).spec.source == "config"
    path = saved(tmp_path, {"state_dict": {**plus_sd, "head.gfl_cls.0.weight": torch.tensor(1.)}},
                 name="zero-d.pth")
    refused(lambda: load_detector(path, config), path, "head.gfl_cls.0.weight", "but () in")


def test_even_kernels_are_no_nanodet(tmp_path):
    spec = small_spec(True)
    spec = replace(spec, head=replace(spec.head, kernel_size=4))
    path = saved(tmp_path, {"state_dict": seeded_state_dict(spec)})
    refused(lambda: load_detector(path), path, "4x4 kernel, not a square odd one")


def test_a_config_for_a_giant_model_is_refused_before_building(tmp_path):
    cfg = yaml.safe_load(PLUS_CFG.read_text())
    cfg["model"]["arch"]["head"].update(num_classes=10_000, feat_channels=4096)
    cfg.pop("class_names")
    config = tmp_path / "giant.yml"
    config.write_text(yaml.safe_dump(cfg))
    path = saved(tmp_path, {"state_dict": seeded_state_dict(small_spec(True))})
    refused(lambda: load_detector(path, config), config, "parameters, more than the")


# --- class-name files ------------------------------------------------------------------------

def names_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "names.txt"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, phrases", [
    (b"person\n\xff\xfebike\ncar\n", ["is not UTF-8 text", "byte 0xff at offset 7"]),
    (b"", ["holds no class names"]),
    (b"\n  \n\n", ["holds no class names"]),
    (b"person\nbi\x1bke\ncar\n", ["line 2", "control character"]),
    (b"a\nb\n", ["has 2 class names but the model has 3 classes"]),
    (b"a" * (2 << 20), ["too large"]),
], ids=["not-utf8", "empty", "blank", "control-char", "wrong-count", "huge"])
def test_bad_class_name_files(tmp_path, content, phrases):
    path = names_file(tmp_path, content)
    refused(lambda: read_class_names(path, 3), path, *phrases)


def test_class_names_tolerate_a_bom_and_duplicates(tmp_path):
    path = names_file(tmp_path, "\ufeffcat\ncat\r\nDöner\n".encode())
    assert read_class_names(path, 3) == ("cat", "cat", "Döner")


def test_class_names_file_must_be_a_regular_file(tmp_path):
    refused(lambda: read_class_names(tmp_path, 3), tmp_path, "is a directory")
    with fifo_with_writer(tmp_path / "names.fifo") as fifo:
        refused(lambda: read_class_names(fifo, 3), fifo, "is a FIFO")


def test_the_hash_is_of_the_bytes_loaded(tmp_path, plus_sd):
    path = saved(tmp_path, {"state_dict": plus_sd})
    assert read_checkpoint(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
