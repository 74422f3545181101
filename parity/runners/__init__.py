"""Backends as small runners behind one interface: `infer(feed) -> {blob: array}`.

A feed is a normalised float32 1x3xHxW tensor; outputs drop the batch dim.
"""

from parity.runners.base import Runner

__all__ = ["Runner"]
