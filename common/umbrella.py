"""`nanodet-unitv2 convert|parity ...`: both commands under a name that clashes with nothing.

`convert` shadows ImageMagick's `convert` where both are on the PATH; the
umbrella runs the same commands with the same options, one-line errors (which
start with `nanodet-unitv2:`), signals and exit codes. A subcommand's module is
imported only when that subcommand runs or help lists it, and those modules
import torch, onnx and ncnn only inside their commands.
"""

from __future__ import annotations

import importlib

import click

from common.cli import PACKAGE, PROG_KEY, OneLineGroup, version_option

SUBCOMMANDS = {"convert": "convert.cli", "parity": "parity.cli"}  # name -> module with `main`


class UmbrellaGroup(OneLineGroup):
    """A group whose subcommands are the `main` commands of other modules, loaded lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = SUBCOMMANDS.get(cmd_name)
        return None if module is None else importlib.import_module(module).main


@click.group(PACKAGE, cls=UmbrellaGroup,
             context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@click.pass_context
def main(ctx: click.Context) -> None:
    """NanoDet checkpoints to the M5Stack UnitV2: `convert` a checkpoint, check its
    `parity`. The same commands as the `convert` and `parity` scripts.

    Exit codes: 0 done / pass, 1 verification or parity failed, 2 usage or input
    error, 130 interrupted, 143 terminated.
    """
    ctx.meta[PROG_KEY] = ctx.info_name or PACKAGE
