"""Edits of one key of a JSON document, for tests that break manifests and reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DELETE = object()  # as the value: remove the key instead of setting it


def assign(*keys_and_value: Any) -> Callable[[dict], None]:
    """An edit that sets (or DELETEs) the key at the path `keys` of a document."""
    *keys, value = keys_and_value

    def edit(doc: dict) -> None:
        for key in keys[:-1]:
            doc = doc[key]
        if value is DELETE:
            del doc[keys[-1]]
        else:
            doc[keys[-1]] = value

    return edit
