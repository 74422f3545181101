"""The JSON Schema of the parity report, generated from its types (parity.report_types).

Shipped as parity/data/report.schema.json; regenerate it after changing a report
type with `python -m parity.report_schema`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from parity.report_codec import json_schema
from parity.report_types import SCHEMA, SCHEMA_VERSION, Report

SCHEMA_FILE = "report.schema.json"


def report_schema() -> dict[str, Any]:
    """The schema of a report of version SCHEMA_VERSION."""
    return json_schema(Report, title=f"{SCHEMA} version {SCHEMA_VERSION}",
                       schema_id=f"urn:{SCHEMA.replace('/', ':')}:{SCHEMA_VERSION}")


def report_schema_text() -> str:
    """The schema file's content."""
    return json.dumps(report_schema(), indent=1, ensure_ascii=False) + "\n"


def shipped_report_schema() -> dict[str, Any]:
    """The schema as the package ships it."""
    return json.loads((resources.files("parity") / "data" / SCHEMA_FILE).read_text())


if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "data" / SCHEMA_FILE
    target.write_text(report_schema_text(), encoding="utf-8")
    print(target)
