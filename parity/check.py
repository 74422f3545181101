"""Run identical inputs through every stage and keep per-image records.

Records are plain JSON data; summaries are computed from them alone, so a
sharded run's reports merge into exactly the unsharded figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.threads import limit_threads
from heads.loader import LoadedModel, load_detector
from parity.detection_stats import detection_record, detections_to_list
from parity.images import CameraFrame, Photo, UnusableImage
from parity.model_folder import read_model_folder
from parity.preprocess import SharedInput, frame_to_tensor
from parity.runners.torch_runner import FREEZE_PAYS_FROM
from parity.stages import Stage, StageContext, build_stages
from parity.tensor_stats import tensor_record


@dataclass(frozen=True)
class CheckInputs:
    """Everything a worker needs to rebuild the stages on its own."""

    checkpoint: Path
    folder: Path
    config: Path | None
    only: frozenset[str] | None = None
    freeze_torch: bool = False  # see SharedForward; run_records turns it on for long runs


def _class_columns(stage: Stage, blob: str, num_classes: int) -> int | None:
    if stage.layout == "plus-native":
        return num_classes
    return num_classes if blob.startswith("cls") else None


def _as_compared(stage: Stage, blob: str, value: np.ndarray) -> np.ndarray:
    """Legacy dis blobs are compared as the firmware reads them: softmax per side.

    Their raw logits are log-probabilities; near the probability floor a tiny
    change of a distance moves a logit by whole units without changing any box.
    """
    if stage.layout != "legacy" or not blob.startswith("dis") or value.ndim != 2 \
            or value.shape[1] % 4:
        return value
    sides = value.reshape(len(value), 4, -1).astype(np.float64)
    sides -= sides.max(axis=2, keepdims=True)
    np.exp(sides, out=sides)
    sides /= sides.sum(axis=2, keepdims=True)
    return sides.reshape(value.shape)


# Tensor comparisons: each stage against the stage it was made from (falling back to
# earlier ones when that one is absent). ncnn-fp16 and device both run the ncnn files.
COMPARED_WITH = {"onnx": ("torch-legacy",), "onnx-sim": ("onnx", "torch-legacy"),
                 "ncnn": ("onnx-sim", "onnx", "torch-legacy"), "ncnn-fp16": ("ncnn",),
                 "device": ("ncnn",)}


def _predecessor(stage: Stage, stages: list[Stage], done: dict[str, Any]) -> Stage | None:
    """The stage `stage` is compared with, tensor to tensor, if it ran on this image."""
    by_name = {s.name: s for s in stages}
    for name in COMPARED_WITH.get(stage.name, ()):
        if name in done and by_name[name].layout == stage.layout:
            return by_name[name]
    return None


def image_record(loaded: LoadedModel, stages: list[Stage], context: StageContext,
                 camera: CameraFrame, input_size: tuple[int, int]) -> dict[str, Any]:
    """Run one camera frame through every stage and compare each with the reference."""
    spec = loaded.spec
    frame = camera.frame
    feed, box = frame_to_tensor(frame, *input_size, mean_bgr=spec.mean_bgr,
                                std_bgr=spec.std_bgr)
    shared = SharedInput(feed)
    record: dict[str, Any] = {
        "image": camera.name, "original_size": list(camera.original_size),
        "frame_sha256": camera.sha256,
        "frame_size": [int(frame.shape[1]), int(frame.shape[0])],
        "input_sha256": shared.sha256, "stages": {}}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    compared: dict[tuple[str, str], np.ndarray] = {}  # (stage, blob) -> compared form

    def compared_form(of: Stage, blob: str, value: np.ndarray) -> np.ndarray:
        if (of.name, blob) not in compared:
            compared[of.name, blob] = _as_compared(of, blob, value)
        return compared[of.name, blob]

    reference = None
    for stage in stages:
        if stage.runner is None:
            continue
        entry: dict[str, Any] = {}
        try:
            run = stage.run(frame, feed.copy(), box, context, shared)
        except Exception as exc:  # noqa: BLE001 - a stage failing is a finding, not a crash
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            record["stages"][stage.name] = entry
            continue
        if reference is None:
            reference = run.detections
            record["reference"] = detections_to_list(reference)
        entry["input_sha256"] = run.input_sha256
        entry["detections"] = detections_to_list(run.detections)
        entry["match"] = detection_record(reference, run.detections)
        previous = _predecessor(stage, stages, outputs)
        if previous is not None:
            entry["compared_with"] = previous.name
            entry["tensors"] = {
                blob: tensor_record(compared_form(previous, blob, outputs[previous.name][blob]),
                                    compared_form(stage, blob, value),
                                    _class_columns(stage, blob, spec.head.num_classes))
                for blob, value in run.outputs.items() if blob in outputs[previous.name]}
        if run.input_max_diff is not None:
            entry["input_max_diff"] = run.input_max_diff
        if stage.name == "device":
            entry["json_lines"] = run.json_lines
        outputs[stage.name] = run.outputs
        record["stages"][stage.name] = entry
    return record


_WORKER: dict[str, Any] = {}


def prepare_check(inputs: CheckInputs) -> tuple[LoadedModel, list[Stage], StageContext,
                                               tuple[int, int]]:
    """Load the checkpoint and folder, build the stages: (model, stages, context, net size).

    Sets this process to one compute thread per library (common.threads): thread
    pools sized to the cores spin beside each other and beside other load."""
    limit_threads()
    loaded = load_detector(inputs.checkpoint, inputs.config)
    folder = read_model_folder(inputs.folder)
    stages, context = build_stages(loaded, folder, set(inputs.only) if inputs.only else None,
                                   inputs.freeze_torch)
    return loaded, stages, context, folder.input_size


def _worker_init(inputs: CheckInputs) -> None:
    _WORKER["state"] = prepare_check(inputs)


def _worker_run(photo: Photo) -> dict[str, Any] | tuple[str, str]:
    loaded, stages, context, size = _WORKER["state"]
    return photo_record(loaded, stages, context, photo, size)


def photo_record(loaded: LoadedModel, stages: list[Stage], context: StageContext,
                 photo: Photo, input_size: tuple[int, int]) -> dict[str, Any] | tuple[str, str]:
    """The photo's record, or (name, reason) when it cannot become a camera frame.

    The photo is decoded here, one at a time, and dropped after its record."""
    try:
        camera = photo.load()
    except UnusableImage as exc:
        return photo.name, str(exc)
    return image_record(loaded, stages, context, camera, input_size)


def stage_table(stages: list[Stage]) -> list[dict[str, Any]]:
    return [{"name": s.name, "layout": s.layout,
             "status": "skipped" if s.runner is None else "ran", "reason": s.skipped}
            for s in stages]


@dataclass
class CheckRun:
    """What a run produced: records in photo order, the stage table, skipped photos."""

    records: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    skipped: dict[str, str]  # photo name -> why it could not become a camera frame
    checkpoint_sha256: str  # of the bytes the reference model was loaded from


def run_records(inputs: CheckInputs, photos: Sequence[Photo], workers: int = 1,
                progress: Callable[[int, int], None] | None = None) -> CheckRun:
    """Every photo through every stage, decoded one at a time (in `workers` processes)."""
    processes = 1 if workers <= 1 or len(photos) <= 1 else workers
    inputs = replace(inputs, freeze_torch=inputs.freeze_torch
                     or len(photos) / processes >= FREEZE_PAYS_FROM)
    loaded, stages, context, size = prepare_check(inputs)  # validates inputs before any work
    run = CheckRun([], stage_table(stages), {}, loaded.checkpoint.sha256)

    def keep(done: int, result: dict[str, Any] | tuple[str, str]) -> None:
        if isinstance(result, tuple):
            run.skipped[result[0]] = result[1]
        else:
            run.records.append(result)
        if progress:
            progress(done, len(photos))

    if processes == 1:
        for done, photo in enumerate(photos, 1):
            keep(done, photo_record(loaded, stages, context, photo, size))
        return run
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(inputs,)) as pool:
        for done, result in enumerate(pool.map(_worker_run, photos, chunksize=1), 1):
            keep(done, result)
    return run

