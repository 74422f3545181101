"""Light entry points for `convert`, `parity` and the umbrella `nanodet-unitv2`
(console scripts and `python -m`).

A command imports torch, onnx and ncnn when it runs (never for `--help` or
`--version`), which takes seconds; Ctrl-C or SIGTERM meanwhile ends with one
line (`prog: interrupted`, exit 130, or `prog: terminated`, exit 143), never a
traceback. Only the standard library is imported before the interrupt handling
is in place.

ONNX Runtime's telemetry is switched off (ORT_DISABLE_TELEMETRY=1 unless the
environment sets it): otherwise it writes `$TMPDIR/.ses` and a device id and
event cache under ~/.cache/Microsoft on every run.
"""

from __future__ import annotations

import importlib
import os
import sys

EXIT_INTERRUPTED = 130


def run_command(prog: str, module: str) -> None:
    """Import `module`'s click command `main` and run it as `prog`; exits."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        from common import cli
    except KeyboardInterrupt:
        _stop(f"{prog}: interrupted", EXIT_INTERRUPTED)
    restore = cli.terminate_like_interrupt()
    try:
        sys.exit(_invoke(prog, module))
    except KeyboardInterrupt as exc:
        _stop(*cli.interrupt_line(prog, exc))
    finally:
        restore()


def _invoke(prog: str, module: str) -> int:
    """Run the command as click's standalone mode would, except for interrupts."""
    import click

    command = importlib.import_module(module).main
    try:
        code = command.main(prog_name=prog, standalone_mode=False)
    except click.ClickException as exc:
        from common.cli import usage_error_line

        print(usage_error_line(prog, exc), file=sys.stderr)
        return exc.exit_code
    except click.Abort as exc:  # click turns Ctrl-C while parsing options into Abort
        cause = exc.__context__
        raise cause if isinstance(cause, KeyboardInterrupt) else KeyboardInterrupt() from None
    return code if isinstance(code, int) else 0


def _stop(line: str, code: int) -> None:
    print(line, file=sys.stderr)
    sys.exit(code)


def convert() -> None:
    """The `convert` console script."""
    run_command("convert", "convert.cli")


def parity() -> None:
    """The `parity` console script."""
    run_command("parity", "parity.cli")


def nanodet_unitv2() -> None:
    """The `nanodet-unitv2` console script: `nanodet-unitv2 convert|parity ...`."""
    run_command("nanodet-unitv2", "common.umbrella")
