"""How a command stops: ``CliError`` (a message on stderr and an exit code) and the exit codes the
commands that follow tasks share."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

EXIT_DONE, EXIT_ERROR, EXIT_CANCELED, EXIT_TIMEOUT, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4


class CliError(Exception):
    """Stops a command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_UNAVAILABLE):
        super().__init__(message)
        self.code = code


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The handler, with a CliError printed as ``<command>: <message>`` and turned into its exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CliError as error:
            print(f"{args.command}: {error}", file=sys.stderr)
            return error.code

    return run
