"""JUnit XML as tests read it: validity against the JUnit XSD
(tests/data/junit.xsd, see tests/data/README.md), its testcases and their outcomes."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

XSD = Path(__file__).parent / "data" / "junit.xsd"


def xsd_problems(path: Path) -> list[str]:
    """Why the file is not valid against the JUnit XSD (empty: valid)."""
    etree = pytest.importorskip("lxml.etree", reason="lxml validates against the JUnit XSD")
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    document = etree.parse(str(path))
    return [] if schema.validate(document) else [str(e) for e in schema.error_log]


def cases(path: Path) -> dict[tuple[str, str], ET.Element]:
    """testcase (classname, name) -> element; each pair exactly once."""
    found = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = (case.get("classname"), case.get("name"))
        assert key not in found, key
        found[key] = case
    return found


def outcome(case: ET.Element) -> str:
    kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
    assert len(kinds) <= 1, kinds
    return kinds[0] if kinds else "passed"
