"""The Python API of `parity`: `check(...)` runs a check, its result writes the reports.

    import parity
    report = parity.check("model.pth", "unitv2/", config="model.yml", synthetic=0)
    report.passed, report.blamed_stage
    report.write_json("r.json"); report.write_junit("r.xml"); report.write_html("r.html")

`parity check` is this function plus option parsing, a progress bar and the
terminal summary (parity/cli.py), so both give the same report for the same
inputs. Bad input raises common.errors.InputError; a failed check is
`passed == False`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from heads.untrusted import open_regular
from parity.baseline import with_baseline
from parity.folder_check import IN_MEMORY_SOURCE, FolderCheck, report_of_run
from parity.gate import read_tolerances
from parity.images import IMAGE_SUFFIXES, LazyFrames, Photo, UnusableImage, in_memory, photos_in
from parity.model_folder import ModelFolder, read_model_folder
from parity.records import CheckInputs, CheckRun, run_records
from parity.report import read_report
from parity.report_files import check_report_paths, write_atomically
from parity.report_types import Report

PathLike = str | Path
Frames = Sequence[tuple[str, np.ndarray]]  # (name, BGR uint8 image)
Progress = Callable[[int, int], None]  # (images done, total)


@dataclass(frozen=True)
class ParityReport(FolderCheck):
    """A finished check: the typed report (`.report`), its verdict and its report files.

    `passed`, `blamed_stage` and `as_json()` come from FolderCheck; `frames`
    (name -> camera frame) feed the HTML overlays; `inputs` are the files the
    check read, which no report may overwrite."""

    frames: Mapping[str, np.ndarray] | None = None
    inputs: tuple[Path, ...] = ()

    @property
    def failing_stages(self) -> list[str]:
        return list(self.report.gate.failing_stages)

    def write_json(self, path: PathLike) -> Path:
        """The JSON report (schema nanodet-unitv2/parity-report), written whole."""
        from parity.report import write_json

        return self._write("json", path, lambda target: write_json(self.report, target))

    def write_junit(self, path: PathLike) -> Path:
        """JUnit XML: one testcase per stage and check, written whole."""
        from parity.report import write_junit

        return self._write("junit", path, lambda target: write_junit(self.report, target))

    def write_html(self, path: PathLike) -> Path:
        """The self-contained HTML report, written whole (frames regenerated if absent)."""
        from parity.html_report import write_html

        return self._write("html", path,
                           lambda target: write_html(self.report, target, self.frames))

    def _write(self, kind: str, path: PathLike, write: Callable[[Path], None]) -> Path:
        target = Path(path)
        check_report_paths({kind: target}, self.inputs)
        write_atomically(target, write)
        return target


def check(checkpoint: PathLike, model_dir: PathLike, images: PathLike | Frames | None = None,
          tolerances: PathLike | None = None, *, config: PathLike | None = None,
          profile: str | None = None, only: Iterable[str] | None = None, workers: int = 1,
          synthetic: int = 20, strict: bool = False, shard: tuple[int, int] | None = None,
          blame: bool = False, baseline: PathLike | None = None,
          progress: Progress | None = None) -> ParityReport:
    """Compare `model_dir` (made by `convert`) with `checkpoint` on identical inputs.

    `images`: a folder of photos, or (name, BGR image) pairs; None for the bundled
    photos plus `synthetic` seeded frames, as `parity check` does. `tolerances`:
    a TOML file over the shipped defaults, `profile` one of its [profiles.NAME]
    tables. `only` limits the stages run beside the reference; `shard` (i, N)
    keeps every N-th image from the i-th; `blame` names the first NCNN layer
    departing from ONNX; `strict` makes an unusable image an error; `baseline`
    (a JSON report of an earlier run on the same images) adds each stage's drift
    from it, gated by the tolerances' [baseline] limits (parity/baseline.py).
    """
    checkpoint, model_dir = Path(checkpoint), Path(model_dir)
    config_path = Path(config) if config is not None else None
    tolerance_path = Path(tolerances) if tolerances is not None else None
    limits = read_tolerances(tolerance_path, profile)
    open_regular(checkpoint, "checkpoint").close()  # a FIFO or device is refused unread
    baseline_path = Path(baseline) if baseline is not None else None
    earlier = read_report(baseline_path) if baseline_path is not None else None
    folder = read_model_folder(model_dir)
    photos, source = chosen_photos(images, synthetic, strict)
    photos = select_shard(photos, shard)
    if earlier is not None and shard is None:
        refuse_too_few_photos(baseline_path, earlier, len(photos))
    inputs = CheckInputs(checkpoint, model_dir, config_path,
                         frozenset(only) if only is not None else None)
    run = run_records(inputs, photos, workers, progress)
    refuse_empty_or_skipped(run, images, strict)
    report = report_of_run(checkpoint, folder, run, source, limits, shard)
    if earlier is not None:
        report = with_baseline(report, earlier, baseline_path)
    frames = LazyFrames(photos)
    if blame:
        from parity.report import plain_json

        report = replace(report, blame=plain_json(
            blame_summary(folder, frames[report.records[0].image])))
    read = [p for p in (checkpoint, model_dir, config_path, tolerance_path, baseline_path) if p]
    if isinstance(images, (str, Path)):
        read.append(Path(images))
    return ParityReport(report, frames, tuple(read))


def folder_photos(folder: Path, strict: bool) -> list[Photo]:
    """The photos of an image folder; with `strict`, any unusable one is an error.

    Only headers are read here; each photo is decoded when its turn comes."""
    if not folder.is_dir():
        raise InputError(folder, "no such image folder")
    try:
        photos: list[Photo] = list(photos_in(folder))
    except OSError as exc:
        raise InputError(folder, f"cannot list the image folder ({exc.strerror})") from None
    if not photos:
        raise InputError(folder, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if strict:
        for photo in photos:
            try:
                photo.check()
            except UnusableImage as exc:
                raise InputError(photo.path, f"{exc} (--strict)") from None
    return photos


def chosen_photos(images: PathLike | Frames | None, synthetic: int, strict: bool
                  ) -> tuple[list[Photo], str]:
    """The photos to check and the report's `source`: a folder, frames in memory, or
    the bundled photos plus `synthetic` seeded frames."""
    if isinstance(images, (str, Path)):
        return folder_photos(Path(images), strict), str(images)
    if images is not None:
        return list(in_memory(images)), IN_MEMORY_SOURCE
    from parity.synthetic import default_frames

    return list(in_memory(default_frames(synthetic))), f"bundled+synthetic:{synthetic}"


def select_shard(photos: list[Photo], shard: tuple[int, int] | None) -> list[Photo]:
    """Shard i of N: every N-th photo from the i-th (1-based); none selected is an error."""
    if shard is None:
        return photos
    index, count = shard
    if not 1 <= index <= count:
        raise InputError("--shard", f"'{index}/{count}': need 1 <= i <= N")
    chosen = [p for i, p in enumerate(photos) if i % count == index - 1]
    if not chosen:
        raise InputError("--shard", f"{index}/{count} selects none of the {len(photos)} images: "
                         "an empty check cannot pass")
    return chosen


def refuse_too_few_photos(baseline_path: Path, earlier: Report, photos: int) -> None:
    """A whole run of fewer photos than the baseline's frames cannot hold them all: refused
    before the run (other images of the same count are found once the frames are hashed)."""
    if photos < earlier.images.count:
        raise InputError(baseline_path, f"holds other images: its {earlier.images.count} "
                         f"frames cannot all be among this run's {photos} photos; a baseline "
                         "must come from the same images")


def refuse_empty_or_skipped(run: CheckRun, images: PathLike | Frames | None,
                            strict: bool) -> None:
    """A skipped photo under `strict`, or no usable photo at all, is an input error."""
    where = Path(images) if isinstance(images, (str, Path)) else None
    if strict and run.skipped:
        name, reason = next(iter(run.skipped.items()))
        raise InputError(where / name if where else name, f"{reason} (--strict)")
    if not run.records:
        raise InputError(where or ("--synthetic" if images is None else IN_MEMORY_SOURCE),
                         f"no usable image: an empty check cannot pass "
                         f"({len(run.skipped)} skipped)")


def blame_summary(folder: ModelFolder, frame: np.ndarray) -> dict[str, Any]:
    """The first NCNN layer departing from ONNX on `frame`, with a one-line summary."""
    from parity.blame import blame_ncnn_against_onnx
    from parity.preprocess import frame_to_tensor

    if not folder.onnx.is_file():
        return {"summary": "not run: no model.onnx"}
    feed, _ = frame_to_tensor(frame, *folder.input_size)
    onnx_path = folder.sim_onnx if folder.sim_onnx.is_file() else folder.onnx
    result = blame_ncnn_against_onnx(onnx_path, folder.param, folder.bin, folder.input_name,
                                     feed)
    found = result.first_departure
    return {**result.to_dict(),
            "summary": f"first NCNN layer departing from {onnx_path.name}: {found}" if found
            else f"every matched NCNN layer agrees with {onnx_path.name}"}
