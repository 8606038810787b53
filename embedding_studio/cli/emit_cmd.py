from __future__ import annotations

import argparse

HELP = "Send JSON-lines clickstream events from FILE (or - for stdin) through the producer SDK."


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE|-")
    parser.set_defaults(handler=_emit)


def _emit(args: argparse.Namespace) -> int:
    raise SystemExit("emit: not built yet")
