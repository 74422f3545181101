"""Hostile cases: `parity` model folders, tolerances and shard reports (see harness.py).

Folder and tolerance cases are refused before any image runs; merge cases use
small crafted shard reports (tests/crafted_reports.py), so every case is fast.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any

from tests.crafted_reports import shard_reports
from tests.hostile.harness import Case, Workspace
from tests.json_edits import DELETE, assign


def edit_json(folder: str, name: str, *keys_and_value: Any) -> Callable[[Workspace], None]:
    """Setup: set (or DELETE) one key of `name` in the copy of `folder`."""
    edit = assign(*keys_and_value)

    def setup(ws: Workspace) -> None:
        path = ws[folder] / name
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))

    return setup


def write_bytes(folder: str, name: str, content: bytes) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        (ws[folder] / name).write_bytes(content)

    return setup


def link_out(name: str, then: Callable[[Workspace], None] | None = None
             ) -> Callable[[Workspace], None]:
    """Setup: `name` in unitv2 becomes a link to a copy outside the folder."""

    def setup(ws: Workspace) -> None:
        inside = ws["unitv2"] / name
        outside = ws.root / f"outside-{name}"
        outside.write_bytes((ws["unitv2"] / "model.param").read_bytes()
                            if not inside.exists() else inside.read_bytes())
        if inside.exists():
            inside.unlink()
        os.symlink(outside, inside)
        if then is not None:
            then(ws)

    return setup


def check_unitv2(*extra: str) -> Callable[[Workspace], list]:
    return lambda ws: ["check", ws["plus.pth"], ws["unitv2"], "-q", *extra]


def in_unitv2(name: str, *phrases: str) -> Callable[[Workspace], list]:
    return lambda ws: [ws["unitv2"] / name, *phrases]


def folder_case(case_id: str, setup, name: str, *phrases: str) -> Case:
    return Case(case_id, "parity", check_unitv2(), setup=setup,
                mentions=in_unitv2(name, *phrases))


def tolerance_case(case_id: str, text: str, *phrases: str) -> Case:
    return Case(case_id, "parity", lambda ws: [*check_unitv2()(ws), "--tolerances",
                                               ws.root / "limits.toml"],
                setup=lambda ws: ws.file("limits.toml", text),
                mentions=lambda ws: [ws.root / "limits.toml", *phrases])


def shards(edit: Callable[[list[dict]], list[dict]]) -> Callable[[Workspace], None]:
    """Setup: crafted reports of shards 1/2 and 2/2, edited, written as r1.json, r2.json..."""

    def setup(ws: Workspace) -> None:
        for index, report in enumerate(edit(copy.deepcopy(shard_reports(2, images=4))), 1):
            ws.file(f"r{index}.json", json.dumps(report))

    return setup


def merge_case(case_id: str, edit: Callable[[list[dict]], list[dict]], count: int,
               mentions: Callable[[Workspace], list], exit_code: int = 2, **options) -> Case:
    return Case(case_id, "parity",
                lambda ws: ["merge", *[ws.root / f"r{i}.json" for i in range(1, count + 1)],
                            "-o", ws.root / "merged.json"],
                exit_code=exit_code, setup=shards(edit), mentions=mentions, **options)


def second(edit: Callable[[dict], None]) -> Callable[[list[dict]], list[dict]]:
    def apply(reports: list[dict]) -> list[dict]:
        edit(reports[1])
        return reports

    return apply


def r2(*phrases: str) -> Callable[[Workspace], list]:
    return lambda ws: [ws.root / "r2.json", *phrases]


MANIFEST, MODEL_JSON = "manifest.json", "model.json"

CASES: list[Case] = [
    # ---------------------------------------------------------------- manifest.json
    folder_case("parity-manifest-width-not-a-number",
                edit_json("unitv2", MANIFEST, "input", "width", "wide"), MANIFEST,
                "input.width: must be an integer"),
    folder_case("parity-manifest-width-not-a-multiple-of-32",
                edit_json("unitv2", MANIFEST, "input", "width", 330), MANIFEST,
                "input.width: must be a multiple of 32"),
    folder_case("parity-manifest-height-huge",
                edit_json("unitv2", MANIFEST, "input", "height", 32 * 10**6), MANIFEST,
                "input.height: must be at most 4096"),
    folder_case("parity-manifest-layout-unknown",
                edit_json("unitv2", MANIFEST, "layout", "sideways"), MANIFEST, "layout"),
    folder_case("parity-manifest-outputs-not-a-list",
                edit_json("unitv2", MANIFEST, "outputs", "cls_pred_stride_8"), MANIFEST,
                "outputs: must be a list"),
    folder_case("parity-manifest-architecture-without-head",
                edit_json("unitv2", MANIFEST, "architecture", "head", DELETE), MANIFEST,
                "architecture.head: missing"),
    folder_case("parity-manifest-rewrite-stride64-unknown",
                edit_json("unitv2", MANIFEST, "rewrite", "stride64", "sometimes"), MANIFEST,
                "rewrite.stride64"),
    folder_case("parity-manifest-target-unknown",
                edit_json("unitv2", MANIFEST, "target", "esp32"), MANIFEST, "target"),
    folder_case("parity-manifest-not-json", write_bytes("unitv2", MANIFEST, b"\x00\xff{"),
                MANIFEST, "not readable JSON"),
    folder_case("parity-manifest-deeply-nested",
                write_bytes("unitv2", MANIFEST, b"[" * 200_000), MANIFEST,
                "not readable JSON"),
    # ---------------------------------------------------------------- model.json
    folder_case("parity-model-json-class-count-a-string",
                edit_json("unitv2", MODEL_JSON, "numOfClass", "3"), MODEL_JSON,
                "numOfClass: must be an integer"),
    folder_case("parity-model-json-class-count-disagrees",
                edit_json("unitv2", MODEL_JSON, "numOfClass", 4), MODEL_JSON,
                "numOfClass: is 4 but className holds 3 names"),
    folder_case("parity-model-json-two-output-nodes",
                edit_json("unitv2", MODEL_JSON, "model", "modelOutputNodes",
                          [{"cls_pred": "a", "dis_pred": "b"}] * 2), MODEL_JSON,
                "model.modelOutputNodes: must have at least 3 items"),
    folder_case("parity-model-json-param-escapes-upwards",
                edit_json("unitv2", MODEL_JSON, "modelParamName", "../../../../etc/passwd"),
                MODEL_JSON, "modelParamName", "not the name of a file in the model folder"),
    folder_case("parity-model-json-param-absolute",
                edit_json("unitv2", MODEL_JSON, "modelParamName", "/etc/passwd"), MODEL_JSON,
                "modelParamName", "not the name of a file in the model folder"),
    folder_case("parity-model-json-bin-in-a-subfolder",
                edit_json("unitv2", MODEL_JSON, "modelBinName", "sub/model.bin"), MODEL_JSON,
                "modelBinName"),
    folder_case("parity-model-json-param-links-out",
                link_out("link.param", edit_json("unitv2", MODEL_JSON, "modelParamName",
                                                 "link.param")),
                MODEL_JSON, "modelParamName", "a link leading out of the model folder"),
    folder_case("parity-model-json-bin-missing",
                edit_json("unitv2", MODEL_JSON, "modelBinName", "weights.bin"), MODEL_JSON,
                "modelBinName: 'weights.bin' is not a file in the model folder"),
    folder_case("parity-unitv2-folder-without-model-json",
                lambda ws: (ws["unitv2"] / MODEL_JSON).unlink(), MODEL_JSON,
                "manifest.json says the folder is for the UnitV2"),
    folder_case("parity-model-bin-links-out", link_out("model.bin"), "model.bin",
                "a link leading out of the model folder"),
    folder_case("parity-model-param-not-a-param",
                write_bytes("unitv2", "model.param", b"7767517\n1 1\nInput data x\n"),
                "model.param"),
    # ---------------------------------------------------------------- tolerances
    tolerance_case("parity-tolerance-negative", "[detections]\nmax_edge_px = -1.0\n",
                   "detections.max_edge_px", "must be finite and >= 0"),
    tolerance_case("parity-tolerance-nan", "[tensors]\nmax_abs = nan\n", "tensors.max_abs"),
    tolerance_case("parity-tolerance-infinite", "[stages.ncnn.detections]\nmax_extra = inf\n",
                   "stages.ncnn.detections.max_extra"),
    tolerance_case("parity-tolerance-fraction-above-one", "[detections]\nmin_ap50 = 1.5\n",
                   "detections.min_ap50", "must lie in [0, 1]"),
    tolerance_case("parity-tolerance-unknown-stage", "[stages.gpu.detections]\nmin_iou = 0.5\n",
                   "unknown key stages.gpu"),
    tolerance_case("parity-tolerance-profile-unknown-key",
                   "[profiles.verify.detections]\nmin_ious = 0.5\n",
                   "unknown key profiles.verify.detections.min_ious"),
    tolerance_case("parity-tolerance-profile-not-a-table", "profiles = 3\n",
                   "profiles must be a table"),
    Case("parity-profile-unknown", "parity", check_unitv2("--profile", "nope"),
         mentions=lambda ws: ["--profile", "no profile 'nope'", "verify"]),
    # ---------------------------------------------------------------- merge
    merge_case("parity-merge-records-missing", second(assign("records", DELETE)), 2,
               r2("records: missing")),
    merge_case("parity-merge-records-not-a-list", second(assign("records", "oops")), 2,
               r2("records: must be a list")),
    merge_case("parity-merge-record-lacks-keys", second(assign("records", [{"image": "a"}])),
               2, r2("records[0].frame_sha256: missing")),
    merge_case("parity-merge-match-points-past-detections",
               second(lambda r: r["records"][0]["stages"]["onnx"]["match"].update(extra=[99])),
               2, r2("records[0].stages.onnx.match.extra[0]: 99 points past")),
    merge_case("parity-merge-same-shard-twice", lambda rs: [rs[0], rs[0]], 2,
               r2("images.shard: 1/2 again")),
    merge_case("parity-merge-one-of-two-shards", lambda rs: rs[:1], 1,
               lambda ws: [ws.root / "r1.json", "shard 2/2 is missing"]),
    merge_case("parity-merge-shards-of-different-counts",
               second(assign("images", "shard", "2/3")), 2, r2("images.shard: 2/3")),
    merge_case("parity-merge-unsharded-report",
               lambda rs: [assign("images", "shard", None)(rs[0]) or rs[0]], 1,
               lambda ws: [ws.root / "r1.json", "images.shard: null: not a shard"]),
    merge_case("parity-merge-infinite-tolerance",
               lambda rs: [assign("tolerances", "tensors", "max_abs", "inf")(r) or r
                           for r in rs], 2,
               lambda ws: [ws.root / "r1.json", "tolerances.tensors.max_abs"]),
    merge_case("parity-merge-stage-table-out-of-order",
               lambda rs: [assign("stages", 1, "order", 99)(r) or r for r in rs], 2,
               lambda ws: [ws.root / "r1.json", "stages[2].order", "not in pipeline order"]),
    merge_case("parity-merge-stage-colour-not-a-colour",
               lambda rs: [assign("stages", 1, "colour", '"><script>')(r) or r for r in rs], 2,
               lambda ws: [ws.root / "r1.json", "stages[1].colour", "not a colour"]),
    merge_case("parity-merge-record-of-a-stage-not-in-the-table",
               second(lambda r: r["records"][0]["stages"].update(gpu={"error": "x"})), 2,
               r2("records[0].stages", "'gpu' is not a stage that ran")),
    merge_case("parity-merge-both-shards", lambda rs: rs, 2, lambda ws: [], exit_code=1,
               creates=("merged.json",), max_stderr_lines=200),
]
