"""What both command-line tools share: one-line errors, documented exit codes, signals,
`--version`.

SIGTERM is handled like Ctrl-C (an exception, so `finally` blocks and clean-ups
run): exit 130 after SIGINT, 143 after SIGTERM, with one line on stderr.

Importing this module must stay light (click and the standard library): `--help`
and `--version` of every command answer without loading torch, onnx or ncnn.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from common.errors import ToolError
from common.versions import tool_versions

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# click >= 8.2 raises this for a group run without a command (its message is the help)
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
PACKAGE = "nanodet-unitv2"
PROG_KEY = "nanodet_unitv2.prog"  # click context meta: the program name errors start with


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM (see `terminate_like_interrupt`): unwinds like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def terminate_like_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise `Terminated`; returns a function that restores the old handler."""
    if not in_main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, previous)


def interrupt_line(prog: str, exc: KeyboardInterrupt) -> tuple[str, int]:
    """The one stderr line and the exit code for an interrupt."""
    if isinstance(exc, Terminated):
        return f"{prog}: terminated", EXIT_TERMINATED
    return f"{prog}: interrupted", EXIT_INTERRUPTED


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block is done (for clean-ups and renames).

    A signal that arrives meanwhile is raised again when the block ends, so the
    program still stops, but never halfway through the block.
    """
    if not in_main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


def error_prog(default: str) -> str:
    """The name error lines start with: `default`, or the umbrella command's name when
    the command runs below it (`nanodet-unitv2 convert ...`)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(PROG_KEY, default) if ctx is not None else default


def one_line_errors(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn ToolError, Ctrl-C and SIGTERM into one line on stderr and the exit code."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            restore = terminate_like_interrupt()
            try:
                return func(*args, **kwargs)
            except ToolError as exc:
                click.echo(f"{error_prog(prog)}: error: {exc}", err=True)
                sys.exit(exc.exit_code)
            except KeyboardInterrupt as exc:
                line, code = interrupt_line(error_prog(prog), exc)
                click.echo(line, err=True)
                sys.exit(code)
            finally:
                restore()
        return run

    return wrap


def version_lines(prog: str) -> list[str]:
    """`<prog> (nanodet-unitv2) X.Y.Z` and the installed versions of the key libraries.

    Read from package metadata only: nothing is imported."""
    versions = tool_versions()
    head = f"{prog} {versions[PACKAGE]}" if prog == PACKAGE \
        else f"{prog} ({PACKAGE}) {versions[PACKAGE]}"
    libraries = ", ".join(f"{name} {version or 'not installed'}"
                          for name, version in versions["libraries"].items())
    return [head, libraries]


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo("\n".join(version_lines(ctx.info_name or PACKAGE)))
    ctx.exit()


def version_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--version` on a click command: print `version_lines` on stdout and exit 0."""
    return click.option("--version", is_flag=True, expose_value=False, is_eager=True,
                        callback=_print_version,
                        help="Print the versions of nanodet-unitv2 and its libraries.")(func)


def usage_error_line(prog: str, exc: click.ClickException) -> str:
    """click's usage errors (bad option values, missing arguments) as one line."""
    if isinstance(exc, NO_ARGS_IS_HELP) and exc.ctx is not None:  # a group run bare
        return f"{prog}: error: missing command (`{exc.ctx.command_path} --help` lists them)"
    return f"{prog}: error: {exc.format_message()}"


class _OneLineUsage:
    """A click command whose usage errors print one line, `prog: error: ...` (exit 2).

    click's own standalone mode prints the usage, a hint and the error on three
    or more lines; everything else (help, exit codes of the command) is unchanged.
    """

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            click.echo(usage_error_line(prog_name or self.name, exc), err=True)
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C while click parsed the options
            click.echo(f"{prog_name or self.name}: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(result if isinstance(result, int) else 0)


class OneLineCommand(_OneLineUsage, click.Command):
    """`@click.command(name, cls=OneLineCommand)`."""


class OneLineGroup(_OneLineUsage, click.Group):
    """`@click.group(name, cls=OneLineGroup)`."""
