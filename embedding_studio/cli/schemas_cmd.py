from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Export the JSON Schema of every event, command and stored record."


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="Write <Contract>.v<N>.schema.json files into DIR.")
    export.add_argument("directory", type=Path, metavar="DIR")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from schemas.export import export_json_schemas

    paths = export_json_schemas(args.directory)
    for path in paths:
        print(path)
    print(f"{len(paths)} schemas written to {args.directory}")
    return 0
