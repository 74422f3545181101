"""What both command-line tools share: one-line errors, documented exit codes, signals.

SIGTERM is handled like Ctrl-C (an exception, so `finally` blocks and clean-ups
run): exit 130 after SIGINT, 143 after SIGTERM, with one line on stderr.
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

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def one_line_errors(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn ToolError, Ctrl-C and SIGTERM into one line on stderr and the exit code."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            restore = terminate_like_interrupt()
            try:
                return func(*args, **kwargs)
            except ToolError as exc:
                click.echo(f"{prog}: error: {exc}", err=True)
                sys.exit(exc.exit_code)
            except KeyboardInterrupt as exc:
                line, code = interrupt_line(prog, exc)
                click.echo(line, err=True)
                sys.exit(code)
            finally:
                restore()
        return run

    return wrap


def usage_error_line(prog: str, exc: click.ClickException) -> str:
    """click's usage errors (bad option values, missing arguments) as one line."""
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
