"""Activation layers by NanoDet config name (nanodet/model/module/activation.py)."""

from __future__ import annotations

from torch import nn

ACTIVATION_NAMES = ("ReLU", "LeakyReLU", "ReLU6", "SELU", "ELU", "GELU", "PReLU", "SiLU",
                    "HardSwish", "Hardswish")


def activation_layer(name: str | None) -> nn.Module:
    """The activation NanoDet builds for `name`; LeakyReLU uses NanoDet's slope 0.1."""
    if name is None:
        return nn.Identity()
    if name == "LeakyReLU":
        return nn.LeakyReLU(negative_slope=0.1)
    if name in ("HardSwish", "Hardswish"):
        return nn.Hardswish()
    if name in ACTIVATION_NAMES:
        return getattr(nn, name)()
    raise ValueError(f"unknown activation {name!r} (known: {', '.join(ACTIVATION_NAMES)})")
