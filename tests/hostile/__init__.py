"""Hostile and unusual inputs for `convert` and `parity`, one case list per area.

Each area module (`convert_cases`, `input_cases`, `parity_cases`, `image_cases`)
defines `CASES: list[Case]`; `tests/test_hostile_matrix.py` runs them all
through one harness that checks the promises of the README's "Bad input"
section.
"""
