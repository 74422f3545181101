"""`convert`: NanoDet checkpoint -> UnitV2 / NCNN model folder.

Exit codes: 0 done, 1 verification failed (folder written, marked failed in
manifest.json), 2 bad input or a stage error, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM); see convert/outputs.py for what --force may replace.

The result line goes to stdout, progress and the summary to stderr. Only click
and rich are imported with this module: torch, onnx and ncnn load when the
command runs, so `--help` and `--version` answer at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.cli import OneLineCommand, one_line_errors, version_option
from parity.targets import TARGETS

if TYPE_CHECKING:
    from convert.pipeline import ConvertResult

PATH = click.Path(path_type=Path)


@click.command("convert", cls=OneLineCommand,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=PATH)
@click.option("--config", type=PATH, help="Official NanoDet YAML config of the model.")
@click.option("--class-names", type=PATH, help="Text file, one class name per line.")
@click.option("--info", is_flag=True, help="Print what was found or inferred, then stop.")
@click.option("--json", "as_json", is_flag=True, help="With --info: print JSON.")
@click.option("--legacy-head", is_flag=True,
              help="Write the legacy layout the UnitV2 firmware decodes (rewrites NanoDet-Plus).")
@click.option("-o", "--output", type=PATH,
              help="Model folder to write [default: ./<checkpoint stem>-unitv2].")
@click.option("--input-size",
              help="Net input WxH, multiples of 32 [default: the target's, 320x256 for the "
                   "UnitV2, whose firmware feeds that].")
@click.option("--target", type=click.Choice(list(TARGETS)), default="unitv2",
              show_default=True, help="Where the model runs (parity/targets/): its ncnn "
                                      "(lint rules), blob names and model.json.")
@click.option("--fp16/--fp32", default=True, show_default=True,
              help="Store weights as fp16 (as pnnx does) or fp32.")
@click.option("--stride64", type=click.Choice(["fold", "drop"]), default="fold",
              show_default=True, help="NanoDet-Plus stride-64 level under --legacy-head.")
@click.option("--tar", is_flag=True, help="Also write <output>.tar.gz.")
@click.option("--force", is_flag=True,
              help="Replace an output folder convert wrote (and, with --tar, the archive file).")
@click.option("--no-verify", is_flag=True, help="Skip the quick parity check on real photos.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the result line.")
@version_option
@one_line_errors("convert")
def main(checkpoint: Path, config: Path | None, class_names: Path | None, info: bool,
         as_json: bool, legacy_head: bool, output: Path | None, input_size: str | None,
         target: str, fp16: bool, stride64: str, tar: bool, force: bool, no_verify: bool,
         quiet: bool) -> None:
    """Convert a NanoDet / NanoDet-Plus CHECKPOINT for the M5Stack UnitV2.

    Exit codes: 0 done, 1 verification failed (folder still written, marked
    failed in manifest.json), 2 bad input or a stage error, 130 interrupted,
    143 terminated (SIGTERM). An interrupted or failed run leaves nothing behind.
    """
    if info:
        print_info(checkpoint, config, class_names, as_json)
        return
    from convert.options import parse_input_size
    from convert.pipeline import convert_checkpoint

    console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)
    size = parse_input_size(input_size) if input_size is not None else None
    with console.status("converting ...") as status:
        def report(line: str) -> None:
            if line.endswith("..."):
                status.update(line)
            elif not quiet:
                console.print(line)

        result = convert_checkpoint(
            checkpoint, config=config, class_names=class_names, legacy_head=legacy_head,
            output=output, input_size=size, target=target, fp16=fp16, stride64=stride64,
            tar=tar, force=force, verify=not no_verify, report=report)
    if not quiet:
        print_summary(console, result)
    verdict = {0: "written", 1: "written, VERIFICATION FAILED"}[result.exit_code]
    click.echo(f"{result.folder} {verdict}")
    sys.exit(result.exit_code)


def print_info(checkpoint: Path, config: Path | None, class_names: Path | None,
               as_json: bool) -> None:
    """--info: what was found in or inferred from the checkpoint, on stdout."""
    from heads.info import info_dict, info_lines
    from heads.loader import load_detector

    loaded = load_detector(checkpoint, config, class_names)
    if as_json:
        click.echo(json.dumps(info_dict(loaded), indent=2))
    else:
        click.echo("\n".join(info_lines(loaded)))


def print_summary(console: Console, result: ConvertResult) -> None:
    manifest = result.manifest
    table = Table(title="nanodet-unitv2 conversion", show_header=False, title_justify="left")
    table.add_row("model", manifest["architecture"]["head"]["kind"] + ", "
                  + f"{len(manifest['architecture']['class_names'])} classes")
    table.add_row("layout", manifest["layout"] + f" (input {manifest['input']['name']} "
                  f"{manifest['input']['width']}x{manifest['input']['height']})")
    table.add_row("rewrite", result.rewrite.describe())
    table.add_row("target", f"{manifest['target']}, {manifest['weights']} weights")
    table.add_row("files", ", ".join(manifest["files"]))
    if result.tar:
        table.add_row("archive", escape(str(result.tar)))
    check = result.verification
    if check is None:
        table.add_row("verify", "skipped (--no-verify)")
    else:
        colour = "green" if check.passed else "red"
        table.add_row("verify", f"[{colour}]{'passed' if check.passed else 'FAILED'}[/]: "
                      f"{check.summary()}")
        for miss in check.missing[:5]:
            table.add_row("", escape(f"missing {miss['class']} {miss['score']} in "
                                     f"{miss['image']}"))
        for extra in check.extra[:5]:
            table.add_row("", escape(f"extra {extra['class']} {extra['score']} in "
                                     f"{extra['image']}"))
        stride64 = None if check.stride64_only is None else \
            result.rewrite.stride64_note(check.stride64_only, check.reference_detections)
        if stride64 is not None:
            table.add_row("stride 64", stride64)
        if check.residuals is not None:
            table.add_row("residuals", f"{check.residuals['clamped']} cells scoring >= 0.4 had "
                          "an edge the legacy layout cannot show (clamped to the firmware's "
                          f"cell centre); {check.residuals['competing']} stride-32 cells scoring "
                          ">= 0.4 were also claimed by a stride-64 prediction")
    for note in result.notes:
        table.add_row("note", escape(note))
    console.print(table)
