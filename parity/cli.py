"""`parity`: identical inputs through every stage; detection and tensor diffs; release gate.

Exit codes: 0 pass, 1 parity failure, 2 usage or input error.

stdout gets what a script needs: one `json: PATH` / `junit: PATH` / `html: PATH`
line per report written, then the verdict line; the progress bar and the table
go to stderr. Only click and rich are imported with this module: torch, onnx
and ncnn load when a command runs, so `--help` and `--version` answer at once.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from common.cli import OneLineGroup, one_line_errors, version_option
from common.errors import EXIT_CHECK_FAILED, EXIT_OK, InputError
from heads.untrusted import open_regular
from parity.report_files import check_report_paths, write_atomically

if TYPE_CHECKING:
    from parity.check import CheckInputs, CheckRun
    from parity.images import LazyFrames, Photo
    from parity.model_folder import ModelFolder
    from parity.report_types import Report

PATH = click.Path(path_type=Path)


@click.group("parity", cls=OneLineGroup,
             context_settings={"help_option_names": ["-h", "--help"]})
@version_option
def main() -> None:
    """Parity of a converted NanoDet model folder with its checkpoint, stage by stage.

    Exit codes: 0 pass, 1 parity failure, 2 usage or input error.
    """


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError("--shard", f"{text!r} is not i/N") from None
    if not 1 <= index <= count:
        raise InputError("--shard", f"{text!r}: need 1 <= i <= N")
    return index, count


def folder_photos(folder: Path, strict: bool) -> list[Photo]:
    """The photos of an --images folder; with `strict`, any unusable one is an error.

    Only headers are read here; each photo is decoded when its turn comes."""
    from parity.images import IMAGE_SUFFIXES, UnusableImage, photos_in

    if not folder.is_dir():
        raise InputError(folder, "no such image folder")
    try:
        photos = photos_in(folder)
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


def select_shard(photos: list[Photo], shard: tuple[int, int] | None) -> list[Photo]:
    if shard is None:
        return photos
    index, count = shard
    chosen = [p for i, p in enumerate(photos) if i % count == index - 1]
    if not chosen:
        raise InputError("--shard", f"{index}/{count} selects none of the {len(photos)} images: "
                         "an empty check cannot pass")
    return chosen


def write_reports(report: Report, json_path: Path | None, junit: Path | None,
                  html: Path | None, frames: LazyFrames | None) -> list[tuple[str, Path]]:
    """Write the requested report files; (kind, path) of each, in the order written."""
    from parity.report import write_json, write_junit

    written: list[tuple[str, Path]] = []
    if json_path:
        write_atomically(json_path, lambda path: write_json(report, path))
        written.append(("json", json_path))
    if junit:
        write_atomically(junit, lambda path: write_junit(report, path))
        written.append(("junit", junit))
    if html:
        from parity.html_report import write_html

        write_atomically(html, lambda path: write_html(report, path, frames))
        written.append(("html", html))
    return written


def verdict_line(report: Report) -> str:
    """The verdict in one line: pass, or the first failing stage and how many checks failed."""
    gate = report.gate
    checks = f"{len(gate.checks)} checks on {report.images.count} images"
    if gate.passed:
        return f"parity: PASS ({checks})"
    failed = sum(not check.passed for check in gate.checks)
    return f"parity: FAIL, first failing stage: {gate.blamed_stage} ({failed} of {checks} failed)"


def _outputs(report: Report, json_path: Path | None, junit: Path | None,
             html: Path | None, frames: LazyFrames | None, console: Console) -> int:
    """Reports written, the table on stderr; on stdout their paths, then the verdict."""
    from parity.report import print_summary

    written = write_reports(report, json_path, junit, html, frames)
    print_summary(report, console)
    for kind, path in written:
        click.echo(f"{kind}: {path}")
    click.echo(verdict_line(report))
    return EXIT_OK if report.gate.passed else EXIT_CHECK_FAILED


@main.command()
@click.argument("checkpoint", type=PATH)
@click.argument("model_dir", type=PATH)
@click.option("--images", type=PATH, help="Folder of images [default: bundled photos + "
              "seeded synthetic frames].")
@click.option("--synthetic", default=20, show_default=True, type=click.IntRange(0, 10_000),
              help="Seeded synthetic frames added to the bundled photos (without --images).")
@click.option("--config", type=PATH, help="Official NanoDet YAML config of the checkpoint.")
@click.option("--tolerances", type=PATH, help="TOML overriding the default tolerances.")
@click.option("--profile", help="Apply the tolerances' [profiles.NAME] table (e.g. verify: "
              "the limits of convert's verification).")
@click.option("--json", "json_path", type=PATH, help="Write the JSON report here.")
@click.option("--junit", type=PATH, help="Write JUnit XML here.")
@click.option("--html", type=PATH, help="Write the self-contained HTML report here.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes running images in parallel.")
@click.option("--shard", help="Run only shard i of N (i/N), for `parity merge`.")
@click.option("--blame", is_flag=True, help="Find the first NCNN layer departing from ONNX.")
@click.option("--strict", is_flag=True, help="Unreadable images fail the check.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@one_line_errors("parity")
def check(checkpoint: Path, model_dir: Path, images: Path | None, synthetic: int,
          config: Path | None, tolerances: Path | None, profile: str | None,
          json_path: Path | None,
          junit: Path | None, html: Path | None, workers: int, shard: str | None, blame: bool,
          strict: bool, quiet: bool) -> None:
    """Compare MODEL_DIR (made by `convert`) with CHECKPOINT on identical inputs."""
    from parity.check import CheckInputs
    from parity.folder_check import report_of_run
    from parity.gate import read_tolerances
    from parity.images import LazyFrames
    from parity.model_folder import read_model_folder
    from parity.report import plain_json

    console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)
    limits = read_tolerances(tolerances, profile)
    shard_of = parse_shard(shard)
    open_regular(checkpoint, "checkpoint").close()  # a FIFO or device is refused unread
    folder = read_model_folder(model_dir)
    check_report_paths({"--json": json_path, "--junit": junit, "--html": html},
                       [p for p in (checkpoint, model_dir, config, tolerances, images) if p])
    photos, source = chosen_photos(images, synthetic, strict)
    photos = select_shard(photos, shard_of)
    run = run_with_progress(CheckInputs(checkpoint, model_dir, config), photos, workers,
                            console, quiet)
    if strict and run.skipped:
        name, reason = next(iter(run.skipped.items()))
        raise InputError(images / name if images else name, f"{reason} (--strict)")
    if not run.records:
        raise InputError(images or "--synthetic", "no usable image: an empty check cannot pass "
                         f"({len(run.skipped)} skipped)")
    report = report_of_run(checkpoint, folder, run, source, limits, shard_of)
    frames = LazyFrames(photos)
    if blame:
        report = replace(report, blame=plain_json(_blame(folder, frames[report.records[0].image])))
    sys.exit(_outputs(report, json_path, junit, html, frames, console))


def chosen_photos(images: Path | None, synthetic: int, strict: bool
                  ) -> tuple[list[Photo], str]:
    """The photos to check and the report's `source`: an --images folder, or the bundled
    photos plus `synthetic` seeded frames."""
    from parity.images import in_memory
    from parity.synthetic import default_frames

    if images is not None:
        return folder_photos(images, strict), str(images)
    return in_memory(default_frames(synthetic)), f"bundled+synthetic:{synthetic}"


def run_with_progress(inputs: CheckInputs, photos: list[Photo], workers: int,
                      console: Console, quiet: bool) -> CheckRun:
    """Every photo through every stage, with a done / total bar on stderr (none with -q)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from parity.check import run_records

    with Progress(TextColumn("parity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("images", total=len(photos))
        return run_records(inputs, photos, workers,
                           lambda done, total: bar.update(task, completed=done))


def _blame(folder: ModelFolder, frame) -> dict[str, Any]:
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


@main.command()
@click.argument("reports", type=PATH, nargs=-1, required=True)
@click.option("-o", "--output", type=PATH, required=True, help="Merged JSON report.")
@click.option("--junit", type=PATH, help="Write JUnit XML here.")
@click.option("--html", type=PATH, help="Write the HTML report here.")
@one_line_errors("parity")
def merge(reports: tuple[Path, ...], output: Path, junit: Path | None, html: Path | None) -> None:
    """Join shard REPORTS into one report; gates like `check`."""
    from parity.report import merge_reports, read_report

    console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)
    check_report_paths({"-o": output, "--junit": junit, "--html": html}, reports)
    merged = merge_reports([(path, read_report(path)) for path in reports])
    sys.exit(_outputs(merged, output, junit, html, None, console))
