"""The JSON Schemas of the parity report and of `parity diff`'s document, generated from
their types (parity.report_types).

Shipped as parity/data/report.schema.json and diff.schema.json; regenerate them
after changing a report type with `python -m parity.report_schema`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from parity.report_codec import json_schema
from parity.report_types import (
    DIFF_SCHEMA,
    DIFF_SCHEMA_VERSION,
    SCHEMA,
    SCHEMA_VERSION,
    DiffDocument,
    Report,
)

SCHEMA_FILE = "report.schema.json"
DIFF_SCHEMA_FILE = "diff.schema.json"
DOCUMENTS = {SCHEMA_FILE: (Report, SCHEMA, SCHEMA_VERSION),
             DIFF_SCHEMA_FILE: (DiffDocument, DIFF_SCHEMA, DIFF_SCHEMA_VERSION)}


def document_schema(file: str = SCHEMA_FILE) -> dict[str, Any]:
    """The schema shipped as `file` (DOCUMENTS), generated from its type."""
    kind, name, version = DOCUMENTS[file]
    return json_schema(kind, title=f"{name} version {version}",
                       schema_id=f"urn:{name.replace('/', ':')}:{version}")


def report_schema() -> dict[str, Any]:
    """The schema of a report of version SCHEMA_VERSION."""
    return document_schema(SCHEMA_FILE)


def schema_text(file: str = SCHEMA_FILE) -> str:
    """The content of the schema file `file`."""
    return json.dumps(document_schema(file), indent=1, ensure_ascii=False) + "\n"


def report_schema_text() -> str:
    """The report schema file's content."""
    return schema_text(SCHEMA_FILE)


def shipped_schema(file: str = SCHEMA_FILE) -> dict[str, Any]:
    """The schema `file` as the package ships it."""
    return json.loads((resources.files("parity") / "data" / file).read_text())


def shipped_report_schema() -> dict[str, Any]:
    """The report schema as the package ships it."""
    return shipped_schema(SCHEMA_FILE)


if __name__ == "__main__":
    for name in DOCUMENTS:
        target = Path(__file__).resolve().parent / "data" / name
        target.write_text(schema_text(name), encoding="utf-8")
        print(target)
