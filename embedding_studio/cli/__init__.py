"""`embedding-studio`: one console script, one module per subcommand.

Each module in ``SUBCOMMANDS`` defines ``HELP`` (one line for the command list) and
``register(parser)``, which adds arguments and sets ``handler`` (args -> exit code). Modules keep
heavy imports (torch, faust) inside their handlers so that ``--help`` stays instant. What several
commands share has modules named for it: ``errors`` (CliError, exit codes), ``arguments`` (shared
options and the cluster they name), ``task_commands`` (sending commands), ``task_status`` (reading
the status topic, following a task) and ``tables``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: tuple[str, ...] = (
    "schemas",
    "config",
    "emit",
    "store",
    "broker",
    "demo",
    "up",
    "worker",
    "trainer",
    "init",
    "embed",
    "tasks",
    "replay",
    "indexer",
    "index",
    "search",
    "serve",
    "status",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedding-studio",
        description="Turn a search engine's clickstream into a better embedding model, continuously. "
        "Settings come from ES_* environment variables (see `embedding-studio config`).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"embedding_studio.cli.{name}_cmd")
        sub = subparsers.add_parser(
            name.replace("_", "-"), help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from schemas.settings import Settings

    from observability.logs import configure_logging

    configure_logging(Settings(), process=args.command)  # ES_LOG_LEVEL, ES_LOG_FORMAT
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
