"""The parts of a parity report that `parity merge` and the summaries read, as shapes.

Measured figures may be inf or nan (reports write them as strings); indices
into detection lists must point into them; histograms have the fixed bins.
"""

from __future__ import annotations

import re
from typing import Any

from parity.json_shape import (
    ShapeError,
    anything,
    boolean,
    integer,
    key_path,
    keyed,
    list_of,
    mapping,
    nullable,
    number,
    obj,
    refine,
    string,
    tuple_of,
)
from parity.layouts import Layout
from parity.stage_registry import EXTRA_CHECKS
from parity.tensor_stats import HIST_EDGES

FIGURE = number(nonfinite=True)
COUNT = integer(minimum=0)
INDEX = integer(minimum=0)
LAYOUTS = tuple(str(layout) for layout in Layout)
DETECTION_ROW = tuple_of(FIGURE, FIGURE, FIGURE, FIGURE, FIGURE, INDEX)  # x1 y1 x2 y2 score label

PAIR = obj({"ref": INDEX, "stage": INDEX, "iou": FIGURE, "score_diff": FIGURE,
            "edge_px": FIGURE, "same_label": boolean()})
MATCH = obj({"pairs": list_of(PAIR), "missing": list_of(INDEX), "extra": list_of(INDEX)})


def _argmax_rule(record: dict[str, Any], at: str) -> None:
    rows, agree = record.get("argmax_rows"), record.get("argmax_agree")
    if (rows is None) != (agree is None):
        raise ShapeError(at, "argmax_rows and argmax_agree go together")
    if rows is not None and agree > rows:
        raise ShapeError(key_path(at, "argmax_agree"), f"{agree} is more than argmax_rows {rows}")


TENSOR_FIGURES = refine(obj(
    {"count": COUNT, "max_abs": FIGURE, "sum_abs": FIGURE, "nonfinite": COUNT,
     "max_rel": FIGURE, "dot": FIGURE, "norm_ref": FIGURE, "norm_stage": FIGURE,
     "hist": list_of(COUNT, min_items=len(HIST_EDGES) - 1, max_items=len(HIST_EDGES) - 1)},
    {"argmax_rows": COUNT, "argmax_agree": COUNT}), _argmax_rule)
TENSOR = keyed("shape_mismatch",
               obj({"shape_mismatch": tuple_of(list_of(COUNT), list_of(COUNT))}),
               TENSOR_FIGURES)

STAGE_ENTRY = keyed(
    "error", obj({"error": string()}),
    obj({"input_sha256": string(), "detections": list_of(DETECTION_ROW), "match": MATCH},
        {"compared_with": string(), "tensors": mapping(TENSOR), "input_max_diff": FIGURE,
         "json_lines": list_of(string())}))


def _plain_name(name: str, at: str) -> None:
    """Image names are file names (the HTML report opens them in the image folder)."""
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ShapeError(at, f"{name[:40]!r} is not a plain file name")


def _points_into(index: int, size: int, at: str, of: str) -> None:
    if index >= size:
        raise ShapeError(at, f"{index} points past the {size} {of} detections")


def _record_rule(record: dict[str, Any], at: str) -> None:
    """Matches point into the reference's and the stage's detections."""
    _plain_name(record["image"], key_path(at, "image"))
    reference = len(record.get("reference", []))
    for name, entry in record["stages"].items():
        if "error" in entry:
            continue
        found, match = len(entry["detections"]), entry["match"]
        where = key_path(key_path(key_path(at, "stages"), name), "match")
        for i, pair in enumerate(match["pairs"]):
            pair_at = key_path(key_path(where, "pairs"), i)
            _points_into(pair["ref"], reference, key_path(pair_at, "ref"), "reference")
            _points_into(pair["stage"], found, key_path(pair_at, "stage"), "stage")
        for key, size, of in (("missing", reference, "reference"), ("extra", found, "stage")):
            for i, index in enumerate(match[key]):
                _points_into(index, size, key_path(key_path(where, key), i), of)


RECORD = refine(obj(
    {"image": string(nonempty=True), "frame_sha256": string(),
     "frame_size": tuple_of(integer(minimum=1), integer(minimum=1)),
     "input_sha256": string(), "stages": mapping(STAGE_ENTRY)},
    {"reference": list_of(DETECTION_ROW)}), _record_rule)

HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def _hex_colour(value: str, at: str) -> None:
    if not HEX_COLOUR.fullmatch(value):
        raise ShapeError(at, f"{value[:40]!r} is not a colour #rrggbb")


STAGE_ROW = obj({"name": string(nonempty=True), "layout": string(LAYOUTS),
                 "status": string(("ran", "skipped")), "reason": nullable(string()),
                 "order": integer(), "reference": boolean(),
                 "compared_with": list_of(string()), "checks": list_of(string(EXTRA_CHECKS)),
                 "colour": refine(string(), _hex_colour)})


def _stage_table_rule(stages: list[dict[str, Any]], at: str) -> None:
    """Names once each, in pipeline order; the reference first; predecessors earlier."""
    names = [stage["name"] for stage in stages]
    for i, stage in enumerate(stages):
        row_at = key_path(at, i)
        if stage["name"] in names[:i]:
            raise ShapeError(key_path(row_at, "name"), f"{stage['name']!r} is listed twice")
        if i and stage["order"] <= stages[i - 1]["order"]:
            raise ShapeError(key_path(row_at, "order"), "stages are not in pipeline order")
        if stage["reference"] != (i == 0):
            raise ShapeError(key_path(row_at, "reference"),
                             "the first stage, and only it, is the reference")
        for name in stage["compared_with"]:
            if name not in names[:i]:
                raise ShapeError(key_path(row_at, "compared_with"),
                                 f"{name!r} is not an earlier stage")


def _report_rule(report: dict[str, Any], at: str) -> None:
    images, records = report["images"], report["records"]
    if images["count"] != len(records):
        raise ShapeError("images.count", f"is {images['count']} but records holds "
                         f"{len(records)} images")
    ran = {stage["name"] for stage in report["stages"] if stage["status"] == "ran"}
    for i, record in enumerate(records):
        unknown = next((name for name in record["stages"] if name not in ran), None)
        if unknown is not None:
            raise ShapeError(f"records[{i}].stages", f"{unknown!r} is not a stage that ran "
                             "(stages)")
    names = [record["image"] for record in records]
    if len(set(names)) != len(names):
        twice = next(name for i, name in enumerate(names) if name in names[:i])
        raise ShapeError("records", f"image {twice!r} is listed twice")


REPORT = refine(obj({
    "tool": obj({}),
    "checkpoint": obj({"file": string()}, {"sha256": string()}),
    "model_folder": obj({"path": string()}, {"layout": string(), "input": nullable(obj({}))}),
    "images": obj({"source": string(), "count": COUNT, "unreadable": list_of(string()),
                   "shard": nullable(string())}, {"skipped": mapping(string())}),
    "stages": refine(list_of(STAGE_ROW, min_items=1), _stage_table_rule),
    "tolerances": anything(),  # checked by parity.gate.check_tolerances
    "records": list_of(RECORD),
}, {"blame": nullable(obj({}, {"summary": string()}))}), _report_rule)
