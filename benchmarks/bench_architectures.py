"""Benchmark per official NanoDet architecture: conversion wall time, and pip-ncnn latency
of the legacy-layout export against the native export of the same weights.

Each architecture is a seeded 3-class checkpoint of its official config
(tests/test_architectures.py: BatchNorm statistics from the bundled photos, so
activations have realistic scale; the head's last convs random, as latency does not
depend on them), converted twice without verification for
`--target ncnn-latest` at 320x256 (the config's own size where the architecture fixes
it: TAN): native layout and `--legacy-head`. Latency: 1 thread, fp32, interleaved
rounds of 10 runs in a fresh process (benchmarks/bench_convert.py,
`fresh_latency_rounds`: the conversions leave this one's heap fragmented), the ratio
legacy / native as the median of the per-round ratios. A legacy NanoDet-m head has one
layout only, so its ratio compares two exports of the same graph (a measure of the
noise).

Two loaded copies of one graph can differ by 1-2 % for as long as they are loaded, so
each model is loaded `--copies` times (3) and each round takes the mean over its
copies. A second group of native copies runs in the same rounds: its ratio to the
first (`native_again_percent`) is the noise floor under `legacy_over_native_percent`.

The whole model is measured, not the layers after the head's last convolutions alone:
what a layer costs inside a whole run can differ from what it costs alone (a full
Deconvolution, whose matrix-multiply set-up cost next to nothing alone, cost 1.5-2.5 %
of the whole seeded NanoDet-Plus-m 320; see heads/plus_to_legacy.py).

    python benchmarks/bench_architectures.py [--runs 200] [--copies 3] [--only NAME ...]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_convert import fresh_latency_rounds, paired_overhead_percent
from convert import ConvertResult, convert_checkpoint
from tests.test_architectures import OFFICIAL, seeded_checkpoint, small_config


def timed_convert(checkpoint: Path, config: Path, output: Path, legacy: bool,
                  size: tuple[int, int]) -> tuple[ConvertResult, float]:
    start = time.perf_counter()
    result = convert_checkpoint(checkpoint, config=config, legacy_head=legacy, output=output,
                                input_size=size, target="ncnn-latest", verify=False)
    return result, time.perf_counter() - start


def model_entry(result: ConvertResult) -> tuple:
    """(param, bin, input name, output names) for fresh_latency_rounds."""
    folder, manifest = result.folder, result.manifest
    return (folder / "model.param", folder / "model.bin", manifest["input"]["name"],
            manifest["outputs"])


def mean_over_copies(rounds: dict[str, list[float]], model: str, copies: int) -> list[float]:
    """Per round, the mean ms of the loaded copies `model#0` .. `model#{copies-1}`."""
    per_copy = [rounds[f"{model}#{i}"] for i in range(copies)]
    return [statistics.fmean(times) for times in zip(*per_copy)]


def bench_one(name: str, folder: Path, runs: int, copies: int) -> dict:
    size = OFFICIAL[name]
    config = small_config(name, folder)
    checkpoint = folder / f"{Path(name).stem}.pth"
    seeded_checkpoint(config, checkpoint, size, clear_detections=False)
    native, native_s = timed_convert(checkpoint, config, folder / "native", False, size)
    legacy, legacy_s = timed_convert(checkpoint, config, folder / "legacy", True, size)
    entries = {"native": model_entry(native), "legacy": model_entry(legacy),
               "native again": model_entry(native)}
    rounds = fresh_latency_rounds({f"{model}#{i}": entry for i in range(copies)
                                   for model, entry in entries.items()}, runs, fp16=False)
    means = {model: mean_over_copies(rounds, model, copies) for model in entries}
    return {"config": name, "input": f"{size[0]}x{size[1]}", "copies": copies,
            "convert_s": {"native": round(native_s, 2), "legacy": round(legacy_s, 2)},
            "legacy_stage_s": legacy.manifest.get("stage_seconds"),
            "native_ms": round(min(means["native"]), 3),
            "legacy_ms": round(min(means["legacy"]), 3),
            "legacy_over_native_percent": paired_overhead_percent(means, "legacy", "native"),
            "native_again_percent": paired_overhead_percent(means, "native again", "native")}


def warm_up(folder: Path) -> None:
    """One untimed conversion, so that the first architecture's figures do not carry the
    process's one-off costs (imports, first ONNX export)."""
    name = "nanodet-m.yml"
    config = small_config(name, folder)
    checkpoint = folder / "warm-up.pth"
    seeded_checkpoint(config, checkpoint, OFFICIAL[name], clear_detections=False)
    timed_convert(checkpoint, config, folder / "warm-up", True, OFFICIAL[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--copies", type=int, default=3,
                        help="loaded copies of each model, averaged per round")
    parser.add_argument("--only", nargs="*", default=None, help="config file names")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(Path(tmp))
    for name in args.only or list(OFFICIAL):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = bench_one(name, Path(tmp), args.runs, args.copies)
            except Exception as exc:  # noqa: BLE001 - one failing must not hide the others
                row = {"config": name, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
