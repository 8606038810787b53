from __future__ import annotations

import argparse

HELP = "Show every ES_* setting with its current value (or as a Markdown table for README)."


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true", help="Print the documentation table instead.")
    parser.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    from schemas.settings import ENV_PREFIX, Settings

    settings = Settings()
    if args.markdown:
        print("| variable | default | meaning |\n|---|---|---|")
    for name, field in Settings.model_fields.items():
        env = f"{ENV_PREFIX}{name.upper()}"
        if args.markdown:
            default = "unset" if field.default is None else f"`{field.default}`"
            print(f"| `{env}` | {default} | {field.description} |")
        else:
            print(f"{env}={getattr(settings, name)}")
    return 0
