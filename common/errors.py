"""Errors that the command-line tools turn into one line and an exit code."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


class ToolError(Exception):
    """A problem with a named file or stage; printed as one line, never a traceback."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, where: str | Path, problem: str):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")


class InputError(ToolError):
    """The user's input (file, option, config) is unusable."""


class StageError(ToolError):
    """A pipeline stage failed; `where` names the stage."""
