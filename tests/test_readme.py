"""README.md stays true: its configuration table is the settings model's, and every command it shows exists."""

from __future__ import annotations

import re
from pathlib import Path

from embedding_studio.cli import SUBCOMMANDS, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_configuration_table_is_the_one_the_settings_model_prints(capsys):
    assert main(["config", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    assert table in README, "README's configuration table is stale: paste `embedding-studio config --markdown`"


def test_every_command_readme_shows_is_a_real_subcommand():
    shown = set(re.findall(r"embedding-studio ([a-z][a-z-]+)", README))
    assert shown, "README shows no command"
    assert shown <= set(SUBCOMMANDS), sorted(shown - set(SUBCOMMANDS))
