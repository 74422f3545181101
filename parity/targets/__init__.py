"""Targets: the consumers a model folder is converted for, one module each.

Adding one: a module defining a ``Target`` (with a ``Device`` if it is a camera whose
firmware parity should emulate) and one ``register_target`` line below.
"""

from parity.targets.base import (
    Device,
    JsonLineFormat,
    LegacyBlobs,
    Normalisation,
    Target,
)
from parity.targets.ncnn_latest import NCNN_LATEST
from parity.targets.registry import TARGETS, register_target, target_named
from parity.targets.unitv2 import UNITV2

register_target(UNITV2)
register_target(NCNN_LATEST)

__all__ = ["TARGETS", "Device", "JsonLineFormat", "LegacyBlobs", "Normalisation", "Target",
           "register_target", "target_named"]
