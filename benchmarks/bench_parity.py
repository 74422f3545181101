"""Benchmark of `parity check`: images per second through all seven stages.

NanoDet-Plus-m converted with --legacy-head at 320x256, bundled photos plus
seeded synthetic frames, `--workers 2` on this 2-core machine (target >= 20).
Startup (loading, building stages, spawning workers) is timed separately. Also
reported: each stage's inference alone per image, and the throughput `--workers`
processes could reach if the harness did nothing but those inferences.

    python benchmarks/bench_parity.py [--frames 60] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from convert import convert_checkpoint
from parity.images import in_memory
from parity.preprocess import frame_to_tensor
from parity.records import CheckInputs, prepare_check, run_records
from parity.synthetic import default_frames

ROOT = Path(__file__).resolve().parents[1]


def inference_ms(inputs: CheckInputs, frames: list, repeats: int = 3) -> dict[str, float]:
    """Per stage, ms of its backend's inference alone per image (one process, one thread,
    the torch model frozen as long runs use it): the floor under the harness's own work
    of decoding, matching and comparing."""
    import torch

    torch.set_num_threads(1)
    _, stages, _, size = prepare_check(replace(inputs, freeze_torch=True))
    feeds = [frame_to_tensor(photo.load().frame, *size)[0] for photo in frames]
    timed: dict[str, float] = {}
    for stage in stages:
        if stage.runner is None:
            continue
        stage.runner.infer(feeds[0].copy())  # warm-up (and TorchScript tracing)
        shared = getattr(stage.runner, "forward", None)  # torch runners share one forward
        best = float("inf")
        for _ in range(repeats):
            spent = 0.0
            for feed in feeds:
                if shared is not None:
                    shared.forget()
                    if stage.name != "torch":  # the wrapper reuses the checkpoint's forward
                        shared(feed)
                start = time.perf_counter()
                stage.runner.infer(feed.copy())
                spent += time.perf_counter() - start
            best = min(best, spent / len(feeds) * 1000)
        timed[stage.name] = round(best, 2)
    return timed


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
        frames = in_memory(default_frames(args.frames))
        inputs = CheckInputs(checkpoint, folder, config)
        start = time.perf_counter()
        run_records(inputs, frames[:1], 1)
        startup_one = time.perf_counter() - start
        marks: list[float] = []
        start = time.perf_counter()
        run_records(inputs, frames, args.workers,
                    lambda done, total: marks.append(time.perf_counter()))
        total = time.perf_counter() - start
        floor = inference_ms(inputs, frames[:12])
    steady = (len(frames) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else 0.0
    print(json.dumps({
        "frames": len(frames), "workers": args.workers, "stages": 7,
        "wall_seconds": round(total, 2),
        "images_per_second_overall": round(len(frames) / total, 2),
        "images_per_second_steady": round(steady, 2),
        "single_image_with_startup_seconds": round(startup_one, 2),
        "inference_ms_per_image": floor,
        "inference_ms_per_image_all_stages": round(sum(floor.values()), 1),
        "ceiling_images_per_second_inference_only": round(
            1000 * args.workers / sum(floor.values()), 1)}, indent=2))


if __name__ == "__main__":
    main()
