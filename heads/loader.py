"""Checkpoint (+ optional config) -> a ready NanoDet module and its ArchSpec."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from common.errors import InputError
from heads.checkpoint import Checkpoint, read_checkpoint
from heads.config import read_config
from heads.detector import NanoDet, build_detector
from heads.infer import UnknownArchitecture, infer_spec
from heads.spec import ArchSpec
from heads.untrusted import has_control_character, read_bounded, shown


@dataclass
class LoadedModel:
    model: NanoDet
    spec: ArchSpec
    checkpoint: Checkpoint


MAX_NAMES_BYTES = 1 << 20
MAX_PARAMETERS = 50_000_000  # the released NanoDet models have 1-5 million


def read_class_names(path: str | Path, num_classes: int) -> tuple[str, ...]:
    """One class name per non-empty line of a UTF-8 text file."""
    path = Path(path)
    data = read_bounded(path, "class names", MAX_NAMES_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start})") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    names = [(number, name) for number, name in lines if name]
    if not names:
        raise InputError(path, "holds no class names (one name per line)")
    for number, name in names:
        if has_control_character(name):
            raise InputError(path, f"line {number}: class name {shown(name)} holds a "
                             "control character")
    if len(names) != num_classes:
        raise InputError(path, f"has {len(names)} class names but the model has "
                         f"{num_classes} classes")
    return tuple(name for _, name in names)


def check_model_size(spec: ArchSpec, where: Path) -> None:
    """Refuse before allocating a model far larger than any NanoDet."""
    with torch.device("meta"):
        count = sum(p.numel() for p in build_detector(spec).parameters())
    if count > MAX_PARAMETERS:
        source = "the config" if spec.source == "config" else "the inferred architecture"
        raise InputError(where, f"{source} describes a model of {count:,} parameters, more "
                         f"than the {MAX_PARAMETERS:,} this tool builds (NanoDet models have "
                         "a few million)")


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
        if tensor.is_floating_point() and not found[key].is_floating_point():
            raise InputError(ckpt.path, f"weight {key} holds {found[key].dtype} values, not "
                             "floating-point numbers")
    extra = [k for k in found if k not in expected]
    if extra:
        raise InputError(ckpt.path, f"{prefix}: the checkpoint has {len(extra)} key(s) "
                         f"{origin} lacks, first {shown(extra[0])}")


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
    check_model_size(spec, Path(config) if spec.source == "config" else ckpt.path)
    model = build_detector(spec)
    _check_keys(ckpt, model, spec)
    model.load_state_dict(ckpt.state_dict, strict=True)
    spec = replace(spec, notes=spec.notes + ckpt.notes)
    model.spec = spec
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model.eval(), spec=spec, checkpoint=ckpt)

