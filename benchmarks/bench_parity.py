"""Benchmark of `parity check`: images per second through all seven stages.

NanoDet-Plus-m converted with --legacy-head at 320x256, bundled photos plus
seeded synthetic frames, `--workers 2` on this 2-core machine (target >= 20).
Startup (loading, building stages, spawning workers) is timed separately.

    python benchmarks/bench_parity.py [--frames 60] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from convert import convert_checkpoint
from parity.check import CheckInputs, run_records
from parity.synthetic import default_frames

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="synthetic frames (+5 photos)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    checkpoint = ROOT / "fixtures" / "nanodet-plus-m_416_coco.pth"
    config = ROOT / "fixtures" / "nanodet-plus-m_416.yml"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "plus"
        convert_checkpoint(checkpoint, config=config, legacy_head=True, output=folder,
                           verify=False)
        frames = default_frames(args.frames)
        inputs = CheckInputs(checkpoint, folder, config)
        start = time.perf_counter()
        run_records(inputs, frames[:1], 1)
        startup_one = time.perf_counter() - start
        marks: list[float] = []
        start = time.perf_counter()
        run_records(inputs, frames, args.workers,
                    lambda done, total: marks.append(time.perf_counter()))
        total = time.perf_counter() - start
    steady = (len(frames) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else 0.0
    print(json.dumps({
        "frames": len(frames), "workers": args.workers, "stages": 7,
        "wall_seconds": round(total, 2),
        "images_per_second_overall": round(len(frames) / total, 2),
        "images_per_second_steady": round(steady, 2),
        "single_image_with_startup_seconds": round(startup_one, 2)}, indent=2))


if __name__ == "__main__":
    main()
