"""Small, realistic parity reports built without running a check (for merge tests).

Records come from the same functions `parity check` uses (detection_record,
tensor_record) on seeded random detections and tensors, so their shape is the
real one; `shard_reports` splits them as `--shard i/N` would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from heads.decode import Detections
from parity.detection_stats import detection_record, detections_to_list
from parity.gate import read_tolerances
from parity.report import build_report, plain_json
from parity.report_codec import decode
from parity.report_types import StageRow
from parity.tensor_stats import tensor_record

STAGES = [
    {"name": "torch", "layout": "native", "status": "ran", "reason": None, "order": 0,
     "reference": True, "compared_with": [], "checks": [], "colour": "#4e79a7"},
    {"name": "onnx", "layout": "legacy", "status": "ran", "reason": None, "order": 20,
     "reference": False, "compared_with": ["torch"], "checks": [], "colour": "#59a14f"},
    {"name": "onnx-sim", "layout": "legacy", "status": "skipped",
     "reason": "model.sim.onnx absent", "order": 30, "reference": False,
     "compared_with": ["onnx"], "checks": [], "colour": "#edc948"},
    {"name": "ncnn-fp16", "layout": "legacy", "status": "skipped", "reason": "not selected",
     "order": 50, "reference": False, "compared_with": ["onnx"], "checks": [],
     "colour": "#ff5cc8"},
    {"name": "device", "layout": "legacy", "status": "ran", "reason": None, "order": 60,
     "reference": False, "compared_with": ["onnx"], "checks": ["device_input", "json_lines"],
     "colour": "#a66bff"},
]


def _detections(rng: np.random.Generator, count: int) -> Detections:
    corner = rng.uniform(0, 500, (count, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(10, 100, (count, 2))], axis=1)
    return Detections(boxes.astype(np.float32), rng.uniform(0.1, 1, count).astype(np.float32),
                      rng.integers(0, 3, count))


def _moved(found: Detections, rng: np.random.Generator) -> Detections:
    return Detections(found.boxes + rng.normal(0, 0.5, found.boxes.shape).astype(np.float32),
                      found.scores, found.labels)


def _record(index: int, rng: np.random.Generator) -> dict[str, Any]:
    reference = _detections(rng, 3)
    stages: dict[str, Any] = {}
    for name in ("torch", "onnx", "device"):
        found = reference if name == "torch" else _moved(reference, rng)
        entry: dict[str, Any] = {"input_sha256": "ab" * 32,
                                 "detections": detections_to_list(found),
                                 "match": detection_record(reference, found)}
        if name != "torch":
            cls = rng.uniform(0, 1, (40, 3)).astype(np.float32)
            entry["compared_with"] = "torch"
            entry["tensors"] = {"cls_pred_stride_8": tensor_record(cls, cls + 1e-4, 3)}
        if name == "device":
            entry["input_max_diff"] = float("inf") if index == 0 else 0.0
            entry["json_lines"] = ['{"num": 1}']
        stages[name] = entry
    return {"image": f"photo-{index:02d}.jpg", "frame_sha256": "cd" * 32,
            "frame_size": [640, 480], "input_sha256": "ab" * 32,
            "reference": detections_to_list(reference), "stages": stages}


def shard_reports(shards: int = 2, images: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """Reports of shards 1..`shards` of one check of `images` images (as JSON data)."""
    rng = np.random.default_rng(seed)
    records = [_record(i, rng) for i in range(images)]
    header = {"tool": {"nanodet-unitv2": "test"},
              "checkpoint": {"file": "small.pth", "sha256": "ef" * 32},
              "model_folder": {"path": "unitv2", "layout": "legacy",
                               "input": {"name": "input.1", "width": 320, "height": 256},
                               "manifest_sha256": "01" * 32}}
    reports = []
    for index in range(1, shards + 1):
        mine = [r for i, r in enumerate(records) if i % shards == index - 1]
        images_entry = {"source": "photos", "count": len(mine), "unreadable": [],
                        "skipped": {}, "shard": f"{index}/{shards}"}
        report = build_report({**header, "images": images_entry},
                              [decode(StageRow, row) for row in STAGES], mine,
                              read_tolerances(None))
        reports.append(json.loads(json.dumps(plain_json(report))))
    return reports


def write_reports(folder: Path, reports: list[dict[str, Any]],
                  names: list[str] | None = None) -> list[Path]:
    """Each report as JSON in `folder` (shard1.json ... unless `names`)."""
    names = names or [f"shard{i}.json" for i in range(1, len(reports) + 1)]
    paths = []
    for name, report in zip(names, reports):
        path = folder / name
        path.write_text(json.dumps(report))
        paths.append(path)
    return paths
