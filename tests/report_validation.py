"""Reports the tests write are checked against the shipped JSON Schema."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema

from parity.report_schema import shipped_report_schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = shipped_report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(report: Any) -> list[str]:
    """Where `report` (JSON data) departs from the schema, one line each."""
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in _validator().iter_errors(report)]


def assert_valid_report(report: Any) -> None:
    errors = schema_errors(report)
    assert not errors, errors[:5]
