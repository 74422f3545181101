"""The registry of targets by name (``convert --target``, manifest ``target``)."""

from __future__ import annotations

from common.errors import InputError
from parity.targets.base import Target

TARGETS: dict[str, Target] = {}
"""Registered targets by name, in registration order (the first is the default)."""


def register_target(target: Target) -> Target:
    """Add ``target``; a second target of the same name is a programming error."""
    if target.name in TARGETS:
        raise ValueError(f"target {target.name!r} is already registered")
    TARGETS[target.name] = target
    return target


def target_named(name: str, where: str = "--target") -> Target:
    """The registered target ``name``, or an InputError at ``where`` listing the known ones."""
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise InputError(where, f"{name!r}: choose {' or '.join(TARGETS)}") from None
