"""SQLite store behaviour beyond the contract: readers beside a writer, bounded-memory scans,
schema migration, and URL handling."""

from __future__ import annotations

import multiprocessing
import threading
import tracemalloc
from pathlib import Path

import pytest

from session_store import open_store
from session_store.timestamps import from_micros
from session_store.sqlite_store import SCHEMA_VERSION, SqliteSessionStore, path_from_url
from tests.fixtures.stores import at, make_session

WRITES = 20
PER_WRITE = 500


def _read_while_writing(path: str, ready, stop, results) -> None:
    """Reader process: counts the batch until told to stop; reports every count seen, or the error."""
    try:
        seen: list[int] = []
        with SqliteSessionStore(path, busy_timeout_s=5) as store:
            ready.set()
            while not stop.is_set():
                if store.get_batch("b1") is not None:
                    seen.append(store.count_sessions("b1"))
                    seen.append(sum(1 for _ in store.iter_sessions("b1", page_size=2000)))
        results.put(("ok", seen))
    except BaseException as error:  # reported to the parent, which fails the test with it
        results.put(("error", repr(error)))


def test_a_reader_process_sees_whole_writes_while_the_writer_commits(tmp_path: Path):
    path = str(tmp_path / "sessions.db")
    SqliteSessionStore(path).close()
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    reader = context.Process(target=_read_while_writing, args=(path, ready, stop, results))
    reader.start()
    try:
        assert ready.wait(timeout=60), "the reader process did not start"
        with SqliteSessionStore(path) as writer:
            writer.open_batch("b1", at(0))
            for n in range(WRITES):
                sessions = [make_session(f"s{n}-{i}", results=2, clicks=0) for i in range(PER_WRITE)]
                assert writer.put_sessions("b1", sessions) == PER_WRITE
    finally:
        stop.set()
        outcome, seen = results.get(timeout=60)
        reader.join(timeout=30)

    assert outcome == "ok", seen
    assert len(seen) > 2, "the reader hardly read while the writer wrote"
    # Each write is one transaction: a reader sees all of it or none of it, never a part.
    assert all(count % PER_WRITE == 0 and count <= WRITES * PER_WRITE for count in seen), seen


def test_threads_may_share_one_store(tmp_path: Path):
    errors: list[BaseException] = []
    with SqliteSessionStore(tmp_path / "sessions.db") as store:
        store.open_batch("b1", at(0))

        def write(worker: int) -> None:
            try:
                for n in range(10):
                    store.put_sessions("b1", [make_session(f"w{worker}-{n}-{i}") for i in range(20)])
                    store.count_sessions("b1")
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert store.count_sessions("b1") == 4 * 10 * 20


def _fill(store: SqliteSessionStore, batch_id: str, count: int) -> None:
    store.open_batch(batch_id, at(0))
    for start in range(0, count, 5000):
        store.put_sessions(
            batch_id, [make_session(f"{batch_id}-{i:06d}", results=5) for i in range(start, min(count, start + 5000))]
        )


def test_iter_sessions_runs_one_query_per_page(tmp_path: Path):
    statements: list[str] = []
    with SqliteSessionStore(tmp_path / "sessions.db", trace=statements.append) as store:
        _fill(store, "b1", 1050)
        statements.clear()

        assert sum(1 for _ in store.iter_sessions("b1", page_size=100)) == 1050

    page_queries = [s for s in statements if s.startswith("SELECT rowid, body FROM sessions")]
    assert len(page_queries) == 11  # ten full pages and a short last one
    assert all("LIMIT 100" in s for s in page_queries)


def test_iter_sessions_memory_does_not_grow_with_the_batch(tmp_path: Path):
    with SqliteSessionStore(tmp_path / "sessions.db") as store:
        _fill(store, "small", 1_000)
        _fill(store, "large", 20_000)
        large_bytes = store._connection().execute(
            "SELECT SUM(LENGTH(body)) FROM sessions WHERE batch_id = 'large'"
        ).fetchone()[0]

        def peak_while_scanning(batch_id: str) -> int:
            tracemalloc.start()
            try:
                for _ in store.iter_sessions(batch_id, page_size=250):
                    pass
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        small, large = peak_while_scanning("small"), peak_while_scanning("large")

    # Twenty times the sessions, a peak that differs by a constant: one page is held at a time.
    # The constant is pydantic-core's JSON string cache (16,384 strings, ~1 MiB), which fills up
    # over the first pages of any scan and then stays that size.
    assert large < small + 2 * 1024 * 1024, (small, large)
    assert large < large_bytes / 5, (large, large_bytes)


def test_opening_an_existing_file_keeps_its_data_and_init_is_repeatable(tmp_path: Path):
    path = tmp_path / "nested" / "dir" / "sessions.db"
    with SqliteSessionStore(path) as store:
        store.open_batch("b1", at(0))
        store.put_sessions("b1", [make_session("s1")])
        assert store.init_schema() == SCHEMA_VERSION
    with SqliteSessionStore(path) as store:
        assert store.init_schema() == SCHEMA_VERSION
        assert store.get_session("s1").batch_id == "b1"


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path):
    import sqlite3

    path = tmp_path / "sessions.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        SqliteSessionStore(path)


def test_the_file_is_in_wal_mode(tmp_path: Path):
    import sqlite3

    SqliteSessionStore(tmp_path / "sessions.db").close()
    with sqlite3.connect(tmp_path / "sessions.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///relative/s.db", "relative/s.db"), ("sqlite:////abs/s.db", "/abs/s.db")],
)
def test_sqlite_urls_follow_the_sqlalchemy_convention(url: str, path: str):
    assert path_from_url(url) == Path(path)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "postgres:///x"])
def test_malformed_sqlite_urls_are_refused(url: str):
    with pytest.raises(ValueError):
        path_from_url(url)


def test_open_store_picks_sqlite_by_scheme(tmp_path: Path):
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        assert isinstance(store, SqliteSessionStore)
        assert store.path == tmp_path / "s.db"


def test_open_store_names_the_known_schemes_for_an_unknown_one():
    with pytest.raises(ValueError, match="sqlite, cassandra") as error:
        open_store("mongodb://user:secret@host/db")
    assert "secret" not in str(error.value)


def test_upgrading_a_version_1_store_keeps_its_batches_and_marks_the_closed_ones_announced(tmp_path: Path):
    import sqlite3

    from session_store.sqlite_store import MIGRATIONS

    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:  # a store as version 1 left it
        for statement in MIGRATIONS[1]:
            db.execute(statement)
        db.execute("INSERT INTO batches (batch_id, status, opened_us, closed_us, close_reason) "
                   "VALUES ('old-closed', 'closed', 1, 2, 'size'), ('old-open', 'open', 3, NULL, NULL)")
        db.execute("PRAGMA user_version = 1")
    with SqliteSessionStore(path) as store:
        assert {b.batch_id for b in store.list_batches()} == {"old-closed", "old-open"}
        assert store.list_unannounced() == []  # announced under the old rule: not again
        store.close_batch("old-open", from_micros(10), "age")
        assert [b.batch_id for b in store.list_unannounced()] == ["old-open"]
