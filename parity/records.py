"""Run identical inputs through every stage and keep per-image records.

Records are plain JSON data; summaries are computed from them alone, so a
sharded run's reports merge into exactly the unsharded figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from common.threads import limit_threads
from heads.loader import LoadedModel, load_detector
from parity.detection_stats import detection_record, detections_to_list
from parity.images import CameraFrame, Photo, UnusableImage
from parity.model_folder import read_model_folder
from parity.preprocess import SharedInput, frame_to_tensor
from parity.report_types import StageRow
from parity.runners.torch_runner import FREEZE_PAYS_FROM
from parity.stage_registry import JSON_LINES
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


def _predecessor(stage: Stage, stages: list[Stage], done: dict[str, Any]) -> Stage | None:
    """The stage `stage` is compared with, tensor to tensor, if it ran on this image."""
    by_name = {s.name: s for s in stages}
    for name in stage.descriptor.compared_with:
        if name in done and by_name[name].layout == stage.layout:
            return by_name[name]
    return None


class _ComparedForms:
    """Each stage's blobs as they are compared (see Layout.compared_form), made once."""

    def __init__(self) -> None:
        self._forms: dict[tuple[str, str], np.ndarray] = {}

    def of(self, stage: Stage, outputs: dict[str, np.ndarray], blob: str) -> np.ndarray:
        if (stage.name, blob) not in self._forms:
            position = list(outputs).index(blob)
            self._forms[stage.name, blob] = stage.layout.compared_form(position, outputs[blob])
        return self._forms[stage.name, blob]


def _tensor_records(stage: Stage, outputs: dict[str, np.ndarray], previous: Stage,
                    previous_outputs: dict[str, np.ndarray], forms: _ComparedForms,
                    num_classes: int) -> dict[str, Any]:
    return {blob: tensor_record(forms.of(previous, previous_outputs, blob),
                                forms.of(stage, outputs, blob),
                                stage.layout.class_columns(position, num_classes))
            for position, blob in enumerate(outputs) if blob in previous_outputs}


def _error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def image_record(loaded: LoadedModel, stages: list[Stage], context: StageContext,
                 camera: CameraFrame, input_size: tuple[int, int],
                 seconds: dict[str, float]) -> dict[str, Any]:
    """Run one camera frame through every stage and compare each with the reference.

    `seconds` gets each stage's run time on this frame (the report's `timing`).
    """
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
    forms = _ComparedForms()
    reference = None
    for stage in stages:
        if stage.runner is None:
            continue
        if reference is None and not stage.descriptor.reference:
            reference_name = next((s.name for s in stages if s.descriptor.reference), "?")
            record["stages"][stage.name] = {
                "error": f"no reference: {reference_name} did not run on this image"}
            continue
        entry: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            run = stage.run(frame, feed.copy(), box, context, shared)
        except Exception as exc:  # noqa: BLE001 - a stage failing is a finding, not a crash
            record["stages"][stage.name] = {"error": _error_text(exc)}
            continue
        finally:
            seconds[stage.name] = time.perf_counter() - started
        if reference is None:
            reference = run.detections
            record["reference"] = detections_to_list(reference)
        entry["input_sha256"] = run.input_sha256
        entry["detections"] = detections_to_list(run.detections)
        entry["match"] = detection_record(reference, run.detections)
        previous = _predecessor(stage, stages, outputs)
        if previous is not None:
            entry["compared_with"] = previous.name
            entry["tensors"] = _tensor_records(stage, run.outputs, previous,
                                               outputs[previous.name], forms,
                                               spec.head.num_classes)
        if run.input_max_diff is not None:
            entry["input_max_diff"] = run.input_max_diff
        if JSON_LINES in stage.descriptor.checks:
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


def _worker_run(photo: Photo) -> PhotoResult | tuple[str, str]:
    loaded, stages, context, size = _WORKER["state"]
    return photo_record(loaded, stages, context, photo, size)


@dataclass
class PhotoResult:
    """A photo's record and the seconds each stage ran on it."""

    record: dict[str, Any]
    seconds: dict[str, float]


def photo_record(loaded: LoadedModel, stages: list[Stage], context: StageContext,
                 photo: Photo, input_size: tuple[int, int]) -> PhotoResult | tuple[str, str]:
    """The photo's record, or (name, reason) when it cannot become a camera frame.

    The photo is decoded here, one at a time, and dropped after its record."""
    try:
        camera = photo.load()
    except UnusableImage as exc:
        return photo.name, str(exc)
    seconds: dict[str, float] = {}
    return PhotoResult(image_record(loaded, stages, context, camera, input_size, seconds),
                       seconds)


def stage_table(stages: list[Stage]) -> list[StageRow]:
    """The report's stage table: each stage's descriptor, layout and whether it ran."""
    return [stage.table_row() for stage in stages]


@dataclass
class CheckRun:
    """What a run produced: records in photo order, the stage table, skipped photos."""

    records: list[dict[str, Any]]
    stages: list[StageRow]
    skipped: dict[str, str]  # photo name -> why it could not become a camera frame
    checkpoint_sha256: str  # of the bytes the reference model was loaded from
    started: str = ""  # when the run began, UTC, ISO 8601
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over photos

    def timing(self) -> dict[str, Any]:
        """The report's `timing` entry."""
        return {"started": self.started,
                "seconds": {name: round(value, 3) for name, value in self.stage_seconds.items()}}


def run_records(inputs: CheckInputs, photos: Sequence[Photo], workers: int = 1,
                progress: Callable[[int, int], None] | None = None) -> CheckRun:
    """Every photo through every stage, decoded one at a time (in `workers` processes)."""
    processes = 1 if workers <= 1 or len(photos) <= 1 else workers
    inputs = replace(inputs, freeze_torch=inputs.freeze_torch
                     or len(photos) / processes >= FREEZE_PAYS_FROM)
    loaded, stages, context, size = prepare_check(inputs)  # validates inputs before any work
    run = CheckRun([], stage_table(stages), {}, loaded.checkpoint.sha256,
                   started=datetime.now(UTC).isoformat(timespec="seconds"))

    def keep(done: int, result: PhotoResult | tuple[str, str]) -> None:
        if isinstance(result, tuple):
            run.skipped[result[0]] = result[1]
        else:
            run.records.append(result.record)
            for name, value in result.seconds.items():
                run.stage_seconds[name] = run.stage_seconds.get(name, 0.0) + value
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

