"""Per-stage figures computed from per-image records (and nothing else)."""

from __future__ import annotations

from typing import Any

from parity.detection_stats import merge_detection_records
from parity.stage_registry import JSON_LINES
from parity.tensor_stats import merge_tensor_records


def summarize(records: list[dict[str, Any]], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of every stage of the stage table that ran, from the records alone."""
    summary: dict[str, Any] = {}
    for stage in stages:
        name = stage["name"]
        if stage["status"] != "ran":
            continue
        entries = [(r, r["stages"][name]) for r in records if name in r["stages"]]
        errors = [(r["image"], e["error"]) for r, e in entries if "error" in e]
        ok = [(r, e) for r, e in entries if "error" not in e]
        figures: dict[str, Any] = {"images": len(entries), "errors": len(errors)}
        if errors:
            figures["first_error"] = f"{errors[0][0]}: {errors[0][1]}"
        figures["detections"] = merge_detection_records(
            [{"reference": r.get("reference", []), "stage": e["detections"],
              "record": e["match"]} for r, e in ok])
        blobs: dict[str, list[dict]] = {}
        for _, e in ok:
            for blob, record in e.get("tensors", {}).items():
                blobs.setdefault(blob, []).append(record)
        figures["tensors"] = {blob: merge_tensor_records(rs) for blob, rs in blobs.items()}
        compared = {e.get("compared_with") for _, e in ok} - {None}
        figures["compared_with"] = min(compared) if compared else None
        shared_input = [e["input_sha256"] == r["input_sha256"] for r, e in ok]
        figures["identical_input_fraction"] = sum(shared_input) / len(ok) if ok else 1.0
        diffs = [e["input_max_diff"] for _, e in ok if "input_max_diff" in e]
        if diffs:
            figures["input_max_diff"] = max(diffs)
        lines = [line for _, e in ok for line in e.get("json_lines", [])]
        if JSON_LINES in stage["checks"]:
            figures["json_lines"] = len(lines)
            figures["json_max_bytes"] = max((len(line) for line in lines), default=0)
        summary[name] = figures
    return summary
