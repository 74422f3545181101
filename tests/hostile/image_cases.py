"""Hostile cases: image_cases (see tests/hostile/harness.py)."""

from __future__ import annotations

from tests.hostile.harness import Case

CASES: list[Case] = []
