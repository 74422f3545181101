"""A parity check as a function: a model folder and photos in, the report and verdict out.

`parity check` is this plus argument checking, progress and report files;
`convert` can verify a staging folder with `check_folder(..., profile="verify")`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from common.versions import tool_versions
from parity.gate import read_tolerances
from parity.images import Photo, in_memory
from parity.model_folder import MANIFEST, ModelFolder, read_model_folder
from parity.records import CheckInputs, CheckRun, run_records
from parity.report import build_report
from parity.report_codec import encode
from parity.report_types import Report
from parity.tolerance_types import Tolerances

IN_MEMORY_SOURCE = "in-memory"


@dataclass(frozen=True)
class FolderCheck:
    """What a check found: the report (as `parity check --json` writes it) and its verdict."""

    report: Report

    @property
    def passed(self) -> bool:
        return self.report.gate.passed

    @property
    def blamed_stage(self) -> str | None:
        return self.report.gate.blamed_stage

    def as_json(self) -> dict[str, Any]:
        """The report as `parity check --json` writes it."""
        return encode(self.report)


def report_header(checkpoint: Path, checkpoint_sha256: str, folder: ModelFolder, source: str,
                  skipped: dict[str, str], count: int, shard: tuple[int, int] | None
                  ) -> dict[str, Any]:
    """tool, checkpoint, model_folder and images entries of a report."""
    model_dir = folder.path
    return {
        "tool": tool_versions(),
        "checkpoint": {"file": checkpoint.name, "sha256": checkpoint_sha256},
        "model_folder": {"path": model_dir.name, "layout": folder.layout,
                         "input": folder.manifest.get("input"),
                         "manifest_sha256": hashlib.sha256(
                             (model_dir / MANIFEST).read_bytes()).hexdigest(),
                         "class_names": list(folder.class_names)},
        "images": {"source": source, "count": count, "unreadable": sorted(skipped),
                   "skipped": dict(sorted(skipped.items())),
                   "shard": f"{shard[0]}/{shard[1]}" if shard else None},
    }


def report_of_run(checkpoint: Path, folder: ModelFolder, run: CheckRun, source: str,
                  tolerances: Tolerances, shard: tuple[int, int] | None = None) -> Report:
    """The report of a finished run; a run without one usable image is an InputError."""
    if not run.records:
        raise InputError(source, "no usable image: an empty check cannot pass "
                         f"({len(run.skipped)} skipped)")
    header = report_header(checkpoint, run.checkpoint_sha256, folder, source, run.skipped,
                           len(run.records), shard)
    header["timing"] = run.timing()
    return build_report(header, run.stages, run.records, tolerances)


def check_photos(checkpoint: Path, model_dir: Path, photos: Sequence[Photo], source: str, *,
                 config: Path | None = None, tolerances: dict[str, Any] | None = None,
                 only: Iterable[str] | None = None, workers: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> FolderCheck:
    """Every photo through every stage, gated by `tolerances` (default: the shipped ones)."""
    folder = read_model_folder(model_dir)
    inputs = CheckInputs(checkpoint, model_dir, config,
                         frozenset(only) if only is not None else None)
    run = run_records(inputs, photos, workers, progress)
    limits = tolerances if tolerances is not None else read_tolerances(None)
    return FolderCheck(report_of_run(checkpoint, folder, run, source, limits))


def check_folder(checkpoint: Path, model_dir: Path, frames: Sequence[tuple[str, np.ndarray]],
                 *, config: Path | None = None, profile: str | None = "verify",
                 tolerance_file: Path | None = None, only: Iterable[str] | None = None
                 ) -> FolderCheck:
    """A parity check of `model_dir` on in-memory photos (name, BGR image), in this process.

    `profile` names a [profiles.<name>] table of the tolerances (None: the plain
    defaults); `only` limits the stages run beside the reference (e.g. {"ncnn"}).
    Bad input raises InputError; a failed check is `passed == False`."""
    tolerances = read_tolerances(tolerance_file, profile)
    return check_photos(checkpoint, model_dir, in_memory(frames), IN_MEMORY_SOURCE,
                        config=config, tolerances=tolerances, only=only)
