"""`embedding-studio store`: init, batches, show — on the SQLite store named by ES_STORE_URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedding_studio.cli import main
from session_store.sqlite_store import SqliteSessionStore
from tests.fixtures.stores import at, make_session


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli" / "sessions.db"
    monkeypatch.setenv("ES_STORE_URL", f"sqlite:///{path}")
    return path


def test_init_creates_the_store_then_batches_lists_none(store_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["store", "init"]) == 0
    from session_store.sqlite_store import SCHEMA_VERSION

    assert f"schema version {SCHEMA_VERSION}" in capsys.readouterr().out
    assert store_path.exists()

    assert main(["store", "batches"]) == 0
    assert capsys.readouterr().out.strip() == "no batches"


def test_batches_lists_newest_first_with_live_counts_for_open_ones(store_path: Path, capsys: pytest.CaptureFixture[str]):
    main(["store", "init"])
    with SqliteSessionStore(store_path) as store:
        store.open_batch("batch-old", at(0))
        store.put_sessions("batch-old", [make_session("s1"), make_session("s2")])
        store.close_batch("batch-old", at(10), "release", release_id="rel-1")
        store.open_batch("batch-new", at(20))
        store.put_sessions("batch-new", [make_session("s3")])
    capsys.readouterr()

    assert main(["store", "batches"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["BATCH", "STATUS", "OPENED", "CLOSED", "SESSIONS", "REASON", "RELEASE"]
    assert lines[1].split()[:2] == ["batch-new", "open"] and lines[1].split()[-3:] == ["1", "-", "-"]
    assert lines[2].split()[:2] == ["batch-old", "closed"] and lines[2].split()[-3:] == ["2", "release", "rel-1"]

    assert main(["store", "batches", "--status", "closed"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["batch-old"]


def test_show_prints_a_line_per_session_up_to_the_limit(store_path: Path, capsys: pytest.CaptureFixture[str]):
    with SqliteSessionStore(store_path) as store:
        store.open_batch("b1", at(0))
        store.put_sessions("b1", [make_session(f"s{i}", results=4, clicks=2) for i in range(3)])

    assert main(["store", "show", "b1", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].startswith("batch b1: open, 3 sessions")
    assert [line.split()[0] for line in lines[1:3]] == ["s0", "s1"]
    assert "4 results" in lines[1] and "2 events" in lines[1] and "'query for s0'" in lines[1]
    assert lines[3].strip() == "... 1 more (--limit 0 shows all)"


def test_show_of_an_unknown_batch_fails(store_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["store", "show", "nope"]) == 1
    assert "no batch 'nope'" in capsys.readouterr().err


def test_help_describes_each_action(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_:
        main(["store", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for action in ("init", "batches", "show"):
        assert action in out
