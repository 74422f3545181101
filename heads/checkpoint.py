"""Read every official NanoDet checkpoint format safely (weights_only=True).

Formats: PyTorch-Lightning `.ckpt` (`state_dict` with `model.*` and, when an
EMA was kept, `avg_model.*`), `nanodet_model_best.pth` (`{"state_dict": ...}`),
v0.x `.pth` (`{"epoch", "state_dict", "iter"}`, bare or `module.` keys) and a
bare state_dict.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from heads.errors import InputError

TRAINING_ONLY_PREFIXES = ("aux_fpn.", "aux_head.")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    format: str
    state_dict: dict[str, torch.Tensor]
    notes: tuple[str, ...]
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _torch_load(path: Path) -> object:
    if not path.exists():
        raise InputError(path, "no such checkpoint file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notes from the restricted unpickler
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise InputError(path, "refused: its pickle asks to run code or build objects "
                             "that are not tensors (loaded with weights_only=True; nothing "
                             "was executed)") from None
        raise InputError(path, f"corrupt checkpoint: {_first_line(exc)}") from None
    except PermissionError:
        raise InputError(path, "cannot read checkpoint: permission denied") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputError(path, f"truncated or corrupt checkpoint ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _select_weights(path: Path, raw: dict) -> tuple[dict, str, list[str]]:
    notes: list[str] = []
    if isinstance(raw.get("state_dict"), dict):
        sd = raw["state_dict"]
        if "pytorch-lightning_version" in raw:
            fmt = f"lightning-ckpt (pytorch-lightning {raw['pytorch-lightning_version']})"
        elif "epoch" in raw or "iter" in raw:
            fmt = "nanodet-v0.x-pth"
        else:
            fmt = "nanodet-model-best-pth"
    elif raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        sd, fmt = raw, "bare-state-dict"
    else:
        keys = ", ".join(list(map(str, raw))[:5])
        raise InputError(path, f"not a NanoDet checkpoint: no state_dict and not a state_dict "
                         f"itself (top-level keys: {keys or 'none'})")
    keys = list(sd)
    if any(k.startswith("avg_model.") for k in keys):
        sd = {k[len("avg_model."):]: v for k, v in sd.items() if k.startswith("avg_model.")}
        notes.append("using the EMA weights (avg_model.*), as NanoDet does; model.* ignored")
    elif keys and all(k.startswith("model.") for k in keys):
        sd = {k[len("model."):]: v for k, v in sd.items()}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        notes.append("stripped DataParallel 'module.' prefixes")
    return sd, fmt, notes


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load weights only, pick EMA weights when present, drop training-only modules."""
    path = Path(path)
    raw = _torch_load(path)
    if not isinstance(raw, dict):
        raise InputError(path, f"not a NanoDet checkpoint: top-level object is "
                         f"{type(raw).__name__}, not a dict")
    sd, fmt, notes = _select_weights(path, raw)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(path, f"state_dict entry {bad[0]} is not a tensor")
    dropped = [k for k in sd if k.startswith(TRAINING_ONLY_PREFIXES)]
    if dropped:
        sd = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
        notes.append(f"dropped {len(dropped)} training-only keys (aux_fpn.*, aux_head.*)")
    for key, tensor in sd.items():
        if tensor.is_floating_point():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                count = int((~finite).sum())
                raise InputError(path, f"weight {key} holds {count} NaN/Inf value(s)")
    return Checkpoint(path=path, format=fmt, state_dict=sd, notes=tuple(notes),
                      sha256=file_sha256(path))
