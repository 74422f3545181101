"""`parity`: identical inputs through every stage; detection and tensor diffs; release gate.

Exit codes: 0 pass, 1 parity failure, 2 usage or input error.

A thin layer over the Python API (parity/api.py: `parity.check(...)` and the
report writers of its result). stdout gets what a script needs: one `json: PATH` / `junit: PATH` / `html: PATH`
line per report written, then the verdict line; the progress bar and the table
go to stderr. Only click and rich are imported with this module: torch, onnx
and ncnn load when a command runs, so `--help` and `--version` answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from common.cli import OneLineGroup, one_line_errors, version_option
from common.errors import EXIT_CHECK_FAILED, EXIT_OK, InputError
from parity.report_files import check_report_paths

if TYPE_CHECKING:
    from parity.api import ParityReport
    from parity.report_types import Drift, Gate, Report

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


def write_reports(result: ParityReport, json_path: Path | None, junit: Path | None,
                  html: Path | None) -> list[tuple[str, Path]]:
    """Write the requested report files; (kind, path) of each, in the order written."""
    writers = (("json", json_path, result.write_json), ("junit", junit, result.write_junit),
               ("html", html, result.write_html))
    return [(kind, write(path)) for kind, path, write in writers if path]


def verdict_line(report: Report) -> str:
    """The verdict in one line: pass, or the first failing stage and how many checks failed."""
    gate = report.gate
    checks = f"{len(gate.checks)} checks on {report.images.count} images"
    if gate.passed:
        return f"parity: PASS ({checks})"
    failed = sum(not check.passed for check in gate.checks)
    return f"parity: FAIL, first failing stage: {gate.blamed_stage} ({failed} of {checks} failed)"


def _outputs(result: ParityReport, json_path: Path | None, junit: Path | None,
             html: Path | None, console: Console) -> int:
    """Reports written, the table on stderr; on stdout their paths, then the verdict."""
    from parity.report import print_summary

    written = write_reports(result, json_path, junit, html)
    print_summary(result.report, console)
    for kind, path in written:
        click.echo(f"{kind}: {path}")
    click.echo(verdict_line(result.report))
    return EXIT_OK if result.passed else EXIT_CHECK_FAILED


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
@click.option("--baseline", type=PATH, help="JSON report of an earlier run on the same images: "
              "also gate each stage's drift from it (tolerances' [baseline]).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@one_line_errors("parity")
def check(checkpoint: Path, model_dir: Path, images: Path | None, synthetic: int,
          config: Path | None, tolerances: Path | None, profile: str | None,
          json_path: Path | None,
          junit: Path | None, html: Path | None, workers: int, shard: str | None, blame: bool,
          strict: bool, baseline: Path | None, quiet: bool) -> None:
    """Compare MODEL_DIR (made by `convert`) with CHECKPOINT on identical inputs."""
    from parity.api import check as check_folder

    console = stderr_console()
    check_report_paths({"--json": json_path, "--junit": junit, "--html": html},
                       [p for p in (checkpoint, model_dir, config, tolerances, images, baseline)
                        if p])
    shard_of = parse_shard(shard)
    with progress_bar(console, quiet) as progress:
        result = check_folder(checkpoint, model_dir, images, tolerances, config=config,
                              profile=profile, workers=workers, synthetic=synthetic,
                              strict=strict, shard=shard_of, blame=blame, baseline=baseline,
                              progress=progress)
    sys.exit(_outputs(result, json_path, junit, html, console))


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)


@contextmanager
def progress_bar(console: Console, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A done / total bar of images on stderr (none with -q); yields its update callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("parity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("images", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@main.command()
@click.argument("reports", type=PATH, nargs=-1, required=True)
@click.option("-o", "--output", type=PATH, required=True, help="Merged JSON report.")
@click.option("--junit", type=PATH, help="Write JUnit XML here.")
@click.option("--html", type=PATH, help="Write the HTML report here.")
@click.option("--baseline", type=PATH, help="JSON report of an earlier run on the same images: "
              "also gate the merged run's drift from it.")
@one_line_errors("parity")
def merge(reports: tuple[Path, ...], output: Path, junit: Path | None, html: Path | None,
          baseline: Path | None) -> None:
    """Join shard REPORTS into one report; gates like `check`."""
    from parity.api import ParityReport
    from parity.baseline import merge_baseline
    from parity.report import merge_reports, read_report

    inputs = (*reports, baseline) if baseline else reports
    check_report_paths({"-o": output, "--junit": junit, "--html": html}, inputs)
    shards = [(path, read_report(path)) for path in reports]
    merged = merge_baseline(merge_reports(shards), shards, baseline)
    sys.exit(_outputs(ParityReport(merged, inputs=tuple(inputs)), output, junit, html,
                      stderr_console()))


@main.command()
@click.argument("before", type=PATH)
@click.argument("after", type=PATH)
@click.option("-o", "--output", type=PATH, help="Write the diff as JSON here "
              "(schema nanodet-unitv2/parity-diff).")
@click.option("--tolerances", type=PATH, help="TOML overriding the default tolerances "
              "(its [baseline] limits gate the drift).")
@click.option("--profile", help="Apply the tolerances' [profiles.NAME] table.")
@one_line_errors("parity")
def diff(before: Path, after: Path, output: Path | None, tolerances: Path | None,
         profile: str | None) -> None:
    """What changed from report BEFORE to report AFTER (same images): new, lost and shifted
    detections per stage, one line each on stdout; exit 1 if beyond the [baseline] limits."""
    from parity.baseline import diff_reports
    from parity.drift_report import change_lines, print_drift_table
    from parity.gate import read_tolerances
    from parity.report import read_report, write_document
    from parity.report_files import write_atomically

    check_report_paths({"-o": output}, [p for p in (before, after, tolerances) if p])
    limits = read_tolerances(tolerances, profile)
    later = read_report(after)
    document = diff_reports((before, read_report(before)), (after, later), limits)
    console = stderr_console()
    print_drift_table(document.drift, document.gate.checks,
                      [row.name for row in later.stages], console)
    names = later.model_folder.class_names or ()
    for line in change_lines(document.drift.changes, names):
        click.echo(line)
    if output is not None:
        write_atomically(output, lambda target: write_document(document, target))
        click.echo(f"json: {output}")
    click.echo(diff_verdict_line(document.gate, document.drift))
    sys.exit(EXIT_OK if document.gate.passed else EXIT_CHECK_FAILED)


def diff_verdict_line(gate: Gate, drift: Drift) -> str:
    """The diff's verdict in one line: no drift beyond the limits, or where it starts."""
    changes = f"{len(drift.changes)} changed detections"
    if gate.passed:
        return f"parity diff: within the baseline limits ({changes})"
    failed = sum(not check.passed for check in gate.checks)
    return (f"parity diff: DRIFT, first drifting stage: {gate.blamed_stage} ({failed} of "
            f"{len(gate.checks)} checks failed; {changes})")
