"""Read every official NanoDet checkpoint format safely (weights_only=True).

Formats: PyTorch-Lightning `.ckpt` (`state_dict` with `model.*` and, when an
EMA was kept, `avg_model.*`), `nanodet_model_best.pth` (`{"state_dict": ...}`),
v0.x `.pth` (`{"epoch", "state_dict", "iter"}`, bare or `module.` keys) and a
bare state_dict.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from common.errors import InputError
from common.hashing import stream_sha256
from heads.pickle_scan import PickleScan, scan_pickle, scan_pickles
from heads.untrusted import nonblocking, opening_error, regular_only, shown

TRAINING_ONLY_PREFIXES = ("aux_fpn.", "aux_head.")
REFUSED = ("refused: its pickle asks to run code or build objects that are not tensors "
           "(loaded with weights_only=True; nothing was executed)")
NOT_A_CHECKPOINT = ("not a PyTorch checkpoint: neither a torch zip archive nor a torch pickle "
                    "(corrupt, or another kind of file)")
ZIP_MAGIC = b"PK\x03\x04"
MAX_ZIP_EXPANSION = 10  # members may expand to 10x the file (torch.save stores them as is)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    format: str
    state_dict: dict[str, torch.Tensor]
    notes: tuple[str, ...]
    sha256: str


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """The gist of an error message: one line, bounded (torch's reason, not its advice)."""
    message = str(exc).partition("WeightsUnpickler error:")[2] or str(exc)
    lines = [line for line in message.strip().splitlines() if line.strip()]
    text = " ".join(lines[0].split()) if lines else type(exc).__name__
    if isinstance(exc, (LookupError, TypeError, AttributeError)):  # bare keys, no sentence
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[:limit] + "..."


def _check_zip(handle: BinaryIO, path: Path, size: int) -> None:
    """A torch archive holds `<name>/data.pkl` and does not expand much when read."""
    try:
        with zipfile.ZipFile(handle) as archive:
            members = archive.infolist()
    except Exception as exc:  # noqa: BLE001 - zipfile fails on bad bytes in many ways
        raise InputError(path, f"truncated or corrupt checkpoint (zip archive: "
                         f"{_first_line(exc)})") from None
    if not any(m.filename.endswith("/data.pkl") for m in members):
        raise InputError(path, "not a PyTorch checkpoint: a zip archive without the data.pkl "
                         "that torch.save writes")
    expanded = sum(m.file_size for m in members)
    if expanded > MAX_ZIP_EXPANSION * size + (16 << 20):
        raise InputError(path, f"truncated or corrupt checkpoint (its zip members claim "
                         f"{expanded:,} bytes in a {size:,}-byte file)")


def _pickle_scans(handle: BinaryIO, is_zip: bool) -> list[PickleScan]:
    """The file's pickles: a zip's data.pkl, or the legacy format's consecutive pickles."""
    handle.seek(0)
    if not is_zip:
        return scan_pickles(handle)
    try:
        with zipfile.ZipFile(handle) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            with archive.open(name) as data:
                return [scan_pickle(data)]
    except Exception:  # noqa: BLE001 - an unreadable member: a corrupt archive
        return []


def _why_refused(handle: BinaryIO, is_zip: bool, exc: Exception) -> str:
    """Why torch.load failed: a pickle asking for objects, not a checkpoint, or corrupt."""
    scans = _pickle_scans(handle, is_zip)
    if any(scan.complete and scan.foreign for scan in scans):
        return REFUSED
    if not is_zip and not scans[0].complete:
        return NOT_A_CHECKPOINT
    if not is_zip and torch.serialization.MAGIC_NUMBER not in scans[0].longs:
        return ("not a PyTorch checkpoint: a pickle that torch.save did not write "
                "(corrupt, or another kind of file)")
    return f"truncated or corrupt checkpoint ({_first_line(exc)})"


def _torch_load(handle: BinaryIO, path: Path, size: int) -> object:
    if size == 0:
        raise InputError(path, "empty file: not a PyTorch checkpoint (truncated or corrupt)")
    is_zip = handle.read(4) == ZIP_MAGIC
    handle.seek(0)
    if is_zip:
        _check_zip(handle, path, size)
        handle.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notes from the restricted unpickler
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch's parsers fail on bad bytes in many ways
        problem = _why_refused(handle, is_zip, exc)
    raise InputError(path, problem)


def _format(raw: dict) -> str:
    if "pytorch-lightning_version" in raw:
        version = raw["pytorch-lightning_version"]
        plain = isinstance(version, str) and version.isprintable() and len(version) <= 40
        return f"lightning-ckpt (pytorch-lightning {version if plain else shown(version)})"
    if "epoch" in raw or "iter" in raw:
        return "nanodet-v0.x-pth"
    return "nanodet-model-best-pth"


def _strip_prefixes(sd: dict[str, object], notes: list[str]) -> dict[str, object]:
    keys = list(sd)
    if any(k.startswith("avg_model.") for k in keys):
        sd = {k[len("avg_model."):]: v for k, v in sd.items() if k.startswith("avg_model.")}
        notes.append("using the EMA weights (avg_model.*), as NanoDet does; model.* ignored")
    elif keys and all(k.startswith("model.") for k in keys):
        sd = {k[len("model."):]: v for k, v in sd.items()}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        notes.append("stripped DataParallel 'module.' prefixes")
    return sd


def _select_weights(path: Path, raw: dict) -> tuple[dict, str, list[str]]:
    notes: list[str] = []
    if "state_dict" in raw:
        sd, fmt = raw["state_dict"], _format(raw)
        if not isinstance(sd, dict):
            raise InputError(path, f"not a NanoDet checkpoint: its state_dict is a "
                             f"{type(sd).__name__}, not a mapping of names to tensors")
    elif raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        sd, fmt = raw, "bare-state-dict"
    else:
        keys = ", ".join(shown(k) for k in list(raw)[:5])
        raise InputError(path, f"not a NanoDet checkpoint: no state_dict and not a state_dict "
                         f"itself (top-level keys: {keys or 'none'})")
    if not sd:
        raise InputError(path, "not a NanoDet checkpoint: its state_dict is empty")
    odd_key = next((k for k in sd if not isinstance(k, str)), None)
    if odd_key is not None:
        raise InputError(path, f"state_dict key {shown(odd_key)} is not a string")
    return _strip_prefixes(sd, notes), fmt, notes


def _tensor_problem(tensor: object) -> str | None:
    """Why a state_dict value is no plain CPU tensor of finite numbers, or None."""
    if not isinstance(tensor, torch.Tensor):
        return f"is a {type(tensor).__name__}, not a tensor"
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.is_nested:
        return f"is a {type(tensor).__name__}, not a plain tensor"
    if tensor.layout != torch.strided or tensor.is_quantized:
        return f"is a {'quantized' if tensor.is_quantized else tensor.layout} tensor, not a " \
               "dense one"
    if tensor.device.type != "cpu":
        return f"is a tensor on the {tensor.device.type} device, not stored weights"
    if tensor.numel() * tensor.element_size() > tensor.untyped_storage().nbytes():
        return (f"claims shape {tuple(tensor.shape)} over a storage of "
                f"{tensor.untyped_storage().nbytes()} bytes")
    if tensor.is_floating_point() or tensor.is_complex():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            return f"holds {bad} NaN/Inf value(s)"
    return None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load weights only, pick EMA weights when present, drop training-only modules."""
    path = Path(path)
    try:  # open() here, not in heads.untrusted, so a test can make it fail
        handle = open(path, "rb", opener=nonblocking)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise opening_error(path, "checkpoint", exc) from None
    with regular_only(handle, path, "checkpoint"):
        size = os.fstat(handle.fileno()).st_size
        sha256 = stream_sha256(handle)
        handle.seek(0)
        raw = _torch_load(handle, path, size)
    if not isinstance(raw, dict):
        raise InputError(path, f"not a NanoDet checkpoint: top-level object is "
                         f"{type(raw).__name__}, not a dict")
    sd, fmt, notes = _select_weights(path, raw)
    dropped = [k for k in sd if k.startswith(TRAINING_ONLY_PREFIXES)]
    if dropped:
        sd = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
        notes.append(f"dropped {len(dropped)} training-only keys (aux_fpn.*, aux_head.*)")
    for key, tensor in sd.items():
        problem = _tensor_problem(tensor)
        if problem:
            noun = "weight" if isinstance(tensor, torch.Tensor) else "state_dict entry"
            raise InputError(path, f"{noun} {shown(key)} {problem}")
    return Checkpoint(path=path, format=fmt, state_dict=sd, notes=tuple(notes), sha256=sha256)
