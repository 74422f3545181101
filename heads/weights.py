"""Reading architecture facts from an untrusted state_dict (used by each component's inference)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

StateDict = Mapping[str, torch.Tensor]
ASSUMED_ACTIVATION = "LeakyReLU"  # weights do not record activations: NanoDet's usual one


class UnknownArchitecture(Exception):
    """The state_dict is not one of the NanoDet architectures this tool rebuilds."""


def shape(sd: StateDict, key: str, ndim: int = 4) -> tuple[int, ...]:
    """The shape of `sd[key]`, which must have `ndim` non-empty dimensions."""
    if key not in sd:
        raise UnknownArchitecture(f"expected key {key} is missing")
    found = tuple(sd[key].shape)
    if len(found) != ndim or min(found, default=0) < 1:
        raise UnknownArchitecture(f"{key} has shape {found}, not {ndim} non-empty dimensions")
    return found


def count(sd: StateDict, prefix: str) -> int:
    """How many numbered children `prefix.N.` exist (numbered 0..N-1)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    if indices != set(range(len(indices))):
        raise UnknownArchitecture(f"{prefix}.N children are not numbered 0..{len(indices) - 1}")
    return len(indices)


def odd_kernel(kernel_shape: tuple[int, ...], key: str) -> int:
    """The side of the square odd kernel of a conv weight of `kernel_shape`."""
    if kernel_shape[-1] != kernel_shape[-2] or kernel_shape[-1] % 2 == 0:
        raise UnknownArchitecture(f"{key} has a {kernel_shape[-2]}x{kernel_shape[-1]} kernel, "
                                  "not a square odd one")
    return kernel_shape[-1]


def has_prefix(sd: StateDict, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in sd)
