"""Benchmark per official NanoDet architecture: conversion wall time, and pip-ncnn latency
of the legacy-layout export against the native export of the same weights.

Each architecture is a seeded 3-class checkpoint of its official config
(tests/test_architectures.py: BatchNorm statistics from the bundled photos, so
activations have realistic scale; the head's last convs random, as latency does not
depend on them), converted twice without verification for
`--target ncnn-latest` at 320x256 (the config's own size where the architecture fixes
it: TAN): native layout and `--legacy-head`. Latency: 1 thread, fp32, interleaved
rounds of 10 runs (benchmarks/bench_convert.py), the ratio legacy / native as the
median of the per-round ratios. A legacy NanoDet-m head has one layout only, so its
ratio compares two exports of the same graph (a measure of the noise).

Whole-model ratios cannot resolve 2 % on a shared machine, so the benchmark also
times what the two graphs do not share: the layers after the head's last
convolutions, fed those convolutions' outputs (benchmarks/bench_convert.py
`tail_runner`), in interleaved rounds. `tail_over_native_percent` is the median legacy
tail minus the median native tail, over the median native whole model: the cost of
the legacy layout, against the 2 % target.

    python benchmarks/bench_architectures.py [--runs 200] [--only NAME ...] [--json out.json]
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

from benchmarks.bench_convert import (
    head_blobs,
    head_channels,
    interleaved_rounds,
    latency_rounds,
    tail_runner,
)
from convert import ConvertResult, convert_checkpoint
from tests.test_architectures import OFFICIAL, seeded_checkpoint, small_config


def timed_convert(checkpoint: Path, config: Path, output: Path, legacy: bool,
                  size: tuple[int, int]) -> tuple[ConvertResult, float]:
    start = time.perf_counter()
    result = convert_checkpoint(checkpoint, config=config, legacy_head=legacy, output=output,
                                input_size=size, target="ncnn-latest", verify=False)
    return result, time.perf_counter() - start


def model_entry(result: ConvertResult) -> tuple:
    """(param, bin, input name, output names) for latency_rounds."""
    folder, manifest = result.folder, result.manifest
    return (folder / "model.param", folder / "model.bin", manifest["input"]["name"],
            manifest["outputs"])


def bench_one(name: str, folder: Path, runs: int) -> dict:
    size = OFFICIAL[name]
    config = small_config(name, folder)
    checkpoint = folder / f"{Path(name).stem}.pth"
    seeded_checkpoint(config, checkpoint, size, clear_detections=False)
    native, native_s = timed_convert(checkpoint, config, folder / "native", False, size)
    legacy, legacy_s = timed_convert(checkpoint, config, folder / "legacy", True, size)
    rounds = latency_rounds({"native": model_entry(native), "legacy": model_entry(legacy)},
                            runs, fp16=False)
    ratios = [a / b for a, b in zip(rounds["legacy"], rounds["native"])]
    tails = tail_ms({"native": native, "legacy": legacy}, runs)
    native_ms = statistics.median(rounds["native"])
    return {"config": name, "input": f"{size[0]}x{size[1]}",
            "convert_s": {"native": round(native_s, 2), "legacy": round(legacy_s, 2)},
            "legacy_stage_s": legacy.manifest.get("stage_seconds"),
            "native_ms": round(min(rounds["native"]), 3),
            "legacy_ms": round(min(rounds["legacy"]), 3),
            "legacy_over_native_percent": round((statistics.median(ratios) - 1) * 100, 2),
            "tail_ms": {label: round(value, 4) for label, value in tails.items()},
            "tail_over_native_percent": round(
                100 * (tails["legacy"] - tails["native"]) / native_ms, 2)}


def tail_ms(results: dict[str, ConvertResult], runs: int) -> dict[str, float]:
    """Median ms of each export's layers after the head's last convolutions."""
    runners = {}
    for label, result in results.items():
        param, weights, input_name, outputs = model_entry(result)
        channels = head_channels(result.manifest)
        if not head_blobs(param, channels):
            raise ValueError(f"{label}: no convolution with {channels} outputs ends the head")
        runners[label] = tail_runner(param, weights, input_name, outputs, False, channels)
    return {label: statistics.median(values)
            for label, values in interleaved_rounds(runners, runs).items()}


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
    parser.add_argument("--only", nargs="*", default=None, help="config file names")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(Path(tmp))
    for name in args.only or list(OFFICIAL):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = bench_one(name, Path(tmp), args.runs)
            except Exception as exc:  # noqa: BLE001 - one failing must not hide the others
                row = {"config": name, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
