"""docs/architecture.md and the packages' own descriptions stay true."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from schemas.topics import TopicRegistry

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "architecture.md").read_text()
PACKAGES = ["schemas", "messaging", "session_store", "ingest", "stream_processors", "trainer", "index",
            "plugins", "simulation", "embedding_studio", "embedding_studio.cli", "embedding_studio.embedded", "bench"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_says_what_it_holds(name):
    doc = importlib.import_module(name).__doc__
    assert doc and len(doc.split()) >= 12, f"{name}/__init__.py should say in a paragraph what it holds"


def test_the_page_names_every_topic_of_the_registry():
    for spec in TopicRegistry(prefix="es").all():
        assert f"`{spec.name.removeprefix('es.')}" in PAGE, spec.name


def test_the_page_shows_the_readmes_picture():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## How it works\n\n```\n") + len("## How it works\n\n")
    picture = readme[start:readme.index("```\n", start + 4) + 4]
    assert picture in PAGE


def test_every_module_the_page_names_exists():
    import re

    for path in set(re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)`", PAGE)):
        assert (ROOT / path).is_file(), path
