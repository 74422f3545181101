"""`convert`: NanoDet checkpoint -> UnitV2 / NCNN model folder.

Exit codes: 0 done, 1 verification failed (folder written, marked failed),
2 bad input or a stage error.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from heads.cli_support import one_line_errors
from heads.info import info_dict, info_lines
from heads.loader import load_detector

EXISTING_FILE = click.Path(path_type=Path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=EXISTING_FILE)
@click.option("--config", type=EXISTING_FILE, help="Official NanoDet YAML config of the model.")
@click.option("--class-names", type=EXISTING_FILE, help="Text file, one class name per line.")
@click.option("--info", is_flag=True, help="Print what was found or inferred, then stop.")
@click.option("--json", "as_json", is_flag=True, help="With --info: print JSON.")
@one_line_errors("convert")
def main(checkpoint: Path, config: Path | None, class_names: Path | None, info: bool,
         as_json: bool) -> None:
    """Convert a NanoDet / NanoDet-Plus CHECKPOINT for the M5Stack UnitV2."""
    loaded = load_detector(checkpoint, config, class_names)
    if info:
        if as_json:
            click.echo(json.dumps(info_dict(loaded), indent=2))
        else:
            click.echo("\n".join(info_lines(loaded)))
        return
