"""Checkpoint (+ optional config) -> a ready NanoDet module and its ArchSpec."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from heads.checkpoint import Checkpoint, read_checkpoint
from heads.config import read_config
from heads.detector import NanoDet, build_detector
from heads.errors import InputError
from heads.infer import UnknownArchitecture, infer_spec
from heads.spec import ArchSpec


@dataclass
class LoadedModel:
    model: NanoDet
    spec: ArchSpec
    checkpoint: Checkpoint


def read_class_names(path: str | Path, num_classes: int) -> tuple[str, ...]:
    """One class name per non-empty line."""
    path = Path(path)
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read class names: {exc.strerror or exc}") from None
    if len(names) != num_classes:
        raise InputError(path, f"has {len(names)} class names but the model has "
                         f"{num_classes} classes")
    return tuple(names)


def _check_keys(ckpt: Checkpoint, model: NanoDet, spec: ArchSpec) -> None:
    expected = model.state_dict()
    found = ckpt.state_dict
    origin = "the config" if spec.source == "config" else "the inferred architecture"
    prefix = "config and checkpoint disagree" if spec.source == "config" else \
        "state_dict matches no known NanoDet architecture"
    for key, tensor in expected.items():
        if key not in found:
            raise InputError(ckpt.path, f"{prefix}: {origin} needs {key} "
                             f"{tuple(tensor.shape)}, the checkpoint lacks it")
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise InputError(ckpt.path, f"{prefix}: {key} is {tuple(tensor.shape)} in {origin} "
                             f"but {tuple(found[key].shape)} in the checkpoint")
    extra = [k for k in found if k not in expected]
    if extra:
        raise InputError(ckpt.path, f"{prefix}: the checkpoint has {len(extra)} key(s) "
                         f"{origin} lacks, first {extra[0]}")


def load_detector(checkpoint: str | Path, config: str | Path | None = None,
                  class_names: str | Path | None = None) -> LoadedModel:
    ckpt = read_checkpoint(checkpoint)
    if config is not None:
        spec = read_config(config)
    else:
        try:
            spec = infer_spec(ckpt.state_dict)
        except UnknownArchitecture as exc:
            raise InputError(ckpt.path, f"state_dict matches no known NanoDet "
                             f"architecture: {exc}") from None
    if class_names is not None:
        names = read_class_names(class_names, spec.head.num_classes)
        notes = tuple(n for n in spec.notes if not n.startswith("class names"))
        spec = replace(spec, class_names=names, notes=notes)
    model = build_detector(spec)
    _check_keys(ckpt, model, spec)
    model.load_state_dict(ckpt.state_dict, strict=True)
    spec = replace(spec, notes=spec.notes + ckpt.notes)
    model.spec = spec
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model.eval(), spec=spec, checkpoint=ckpt)

