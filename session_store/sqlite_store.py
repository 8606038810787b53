"""The embedded session store: one SQLite file.

Concurrency model: one writer process (the stream worker) and any number of reader processes
(trainer, CLI). WAL mode lets readers run while the writer commits; ``busy_timeout`` makes a
second writer (say ``store init`` while the worker runs) wait instead of failing. Each thread gets
its own connection, because a sqlite3 connection must not be used by two threads at once and the
stream worker may call from an executor thread as well as from the event loop.

Every write happens in one ``BEGIN IMMEDIATE`` transaction with ``executemany``: per-row commits
would cap the worker at a few hundred sessions per second, one transaction per call at tens of
thousands.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from schemas.sessions import (
    BatchCloseReason,
    BatchRecord,
    BatchStatus,
    ClosedSession,
    OpenSession,
    StoredSession,
)
from session_store.base import (
    BatchNotClosed,
    BatchNotFound,
    BatchNotOpen,
    ReleaseConflict,
    SessionStore,
    StaleBatcher,
)
from session_store.records import open_session, open_session_body, session_body, stored_session
from session_store.timestamps import from_micros, to_micros
from session_store.urls import path_from_url

__all__ = ["SCHEMA_VERSION", "SqliteSessionStore", "path_from_url"]

SCHEMA_VERSION = 2

# Each entry migrates from the previous version; statements are idempotent so that a run cut
# short can simply be repeated.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS batches (
            batch_id      TEXT PRIMARY KEY,
            status        TEXT NOT NULL,
            opened_us     INTEGER NOT NULL,
            closed_us     INTEGER,
            session_count INTEGER NOT NULL DEFAULT 0,
            close_reason  TEXT,
            release_id    TEXT UNIQUE
        )""",
        "CREATE INDEX IF NOT EXISTS batches_newest ON batches (opened_us DESC)",
        # The primary key is what makes "first batch wins": INSERT OR IGNORE never moves a session.
        # Rows are read back in rowid (insertion) order through the batch index.
        """CREATE TABLE IF NOT EXISTS sessions (
            session_id TEXT PRIMARY KEY,
            batch_id   TEXT NOT NULL,
            created_us INTEGER NOT NULL,
            closed_us  INTEGER NOT NULL,
            body       TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS sessions_by_batch ON sessions (batch_id)",
        """CREATE TABLE IF NOT EXISTS open_sessions (
            session_id   TEXT PRIMARY KEY,
            partition    INTEGER NOT NULL,
            last_seen_us INTEGER NOT NULL,
            closed_us    INTEGER,
            body         TEXT NOT NULL
        )""",
        # Partial indexes: the idle scan only ever looks at open states, the purge only at tombstones.
        """CREATE INDEX IF NOT EXISTS open_sessions_idle
            ON open_sessions (partition, last_seen_us, session_id) WHERE closed_us IS NULL""",
        """CREATE INDEX IF NOT EXISTS open_sessions_tombstones
            ON open_sessions (closed_us) WHERE closed_us IS NOT NULL""",
    ),
    # Announcements live in the store, beside the close they follow (ALTER runs inside the same
    # transaction as the user_version bump, so a cut-short run leaves version 1 and is repeated).
    2: (
        "ALTER TABLE batches ADD COLUMN announced_us INTEGER",
        # Batches closed before this version were announced under the old rule: a takeover after
        # the upgrade must not announce the whole history again.
        "UPDATE batches SET announced_us = closed_us WHERE status = 'closed'",
        # One row: the newest batcher epoch; the batcher's writes check it in their own transaction.
        "CREATE TABLE IF NOT EXISTS batcher (scope TEXT PRIMARY KEY, epoch INTEGER NOT NULL)",
        """CREATE INDEX IF NOT EXISTS batches_unannounced
            ON batches (closed_us, batch_id) WHERE status = 'closed' AND announced_us IS NULL""",
    ),
}

_BATCH_COLUMNS = "batch_id, status, opened_us, closed_us, session_count, close_reason, release_id"
_IDLE_PAGE = 1000


class SqliteSessionStore(SessionStore):
    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 30.0,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        """Open (and create or migrate) the store at ``path``.

        ``trace`` receives every SQL statement run, for debugging and for tests that check how
        many queries a scan takes."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._trace = trace
        self._local = threading.local()
        self._all_connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self.init_schema()

    @classmethod
    def from_url(cls, url: str) -> "SqliteSessionStore":
        return cls(path_from_url(url))

    # --- connections ------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # Autocommit mode (isolation_level=None): transactions are opened explicitly, so that
            # writes take the write lock up front (IMMEDIATE) instead of upgrading mid-way and
            # failing with SQLITE_BUSY, which busy_timeout cannot retry.
            # check_same_thread=False only so close() may close every thread's connection.
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            connection.execute("PRAGMA journal_mode = WAL")
            # NORMAL with WAL: a commit survives a crash of the process; only a power loss can undo
            # the last few commits, which at-least-once delivery upstream replays anyway.
            connection.execute("PRAGMA synchronous = NORMAL")
            if self._trace is not None:
                connection.set_trace_callback(self._trace)
            self._local.connection = connection
            with self._connections_lock:
                self._all_connections.append(connection)
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        with self._connections_lock:
            connections, self._all_connections = self._all_connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    # --- schema -------------------------------------------------------------------------------------
    def init_schema(self) -> int:
        with self._write() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema version {version}, newer than this code's {SCHEMA_VERSION}")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {target}")
        return SCHEMA_VERSION

    # --- sessions -----------------------------------------------------------------------------------
    def claim_batcher(self) -> int:
        with self._write() as connection:
            connection.execute(
                "INSERT INTO batcher (scope, epoch) VALUES ('batcher', 1) "
                "ON CONFLICT (scope) DO UPDATE SET epoch = epoch + 1"
            )
            return connection.execute("SELECT epoch FROM batcher WHERE scope = 'batcher'").fetchone()[0]

    def _require_epoch(self, connection: sqlite3.Connection, epoch: int | None) -> None:
        if epoch is None:
            return
        row = connection.execute("SELECT epoch FROM batcher WHERE scope = 'batcher'").fetchone()
        if row is None or row[0] != epoch:
            raise StaleBatcher(f"batcher epoch {epoch} is stale (newest: {row[0] if row else None})")

    def put_sessions(self, batch_id: str, sessions: Iterable[ClosedSession], *, epoch: int | None = None) -> int:
        rows = [
            (s.session_id, batch_id, to_micros(s.created_at), to_micros(s.closed_at), session_body(s))
            for s in sessions
        ]
        with self._write() as connection:
            self._require_epoch(connection, epoch)
            self._require_open(connection, batch_id)
            before = connection.total_changes
            connection.executemany(
                "INSERT OR IGNORE INTO sessions (session_id, batch_id, created_us, closed_us, body) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            return connection.total_changes - before

    def get_session(self, session_id: str) -> StoredSession | None:
        row = self._connection().execute(
            "SELECT batch_id, body FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return None if row is None else stored_session(row[0], row[1])

    def iter_sessions(self, batch_id: str, page_size: int = 500) -> Iterator[StoredSession]:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        connection = self._connection()
        # Keyset pagination on rowid: each page is its own short query that resumes after the
        # last row seen, so nothing holds a read snapshot (or the WAL) open while the trainer
        # works through a page, and OFFSET's re-scan of skipped rows is avoided.
        after = -1
        while True:
            page = connection.execute(
                "SELECT rowid, body FROM sessions WHERE batch_id = ? AND rowid > ? ORDER BY rowid LIMIT ?",
                (batch_id, after, page_size),
            ).fetchall()
            for _, body in page:
                yield stored_session(batch_id, body)
            if len(page) < page_size:
                return
            after = page[-1][0]

    def count_sessions(self, batch_id: str) -> int:
        return self._connection().execute(
            "SELECT COUNT(*) FROM sessions WHERE batch_id = ?", (batch_id,)
        ).fetchone()[0]

    # --- batches ------------------------------------------------------------------------------------
    def open_batch(self, batch_id: str, opened_at: datetime) -> BatchRecord:
        with self._write() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO batches (batch_id, status, opened_us) VALUES (?, 'open', ?)",
                (batch_id, to_micros(opened_at)),
            )
            return self._batch(connection, batch_id)  # type: ignore[return-value]

    def get_open_batch(self) -> BatchRecord | None:
        row = self._connection().execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status = 'open' ORDER BY opened_us DESC, rowid DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _batch_record(row)

    def close_batch(
        self, batch_id: str, closed_at: datetime, reason: BatchCloseReason, release_id: str | None = None,
        *, epoch: int | None = None,
    ) -> BatchRecord:
        with self._write() as connection:
            self._require_epoch(connection, epoch)
            current = self._batch(connection, batch_id)
            if current is None:
                raise BatchNotFound(batch_id)
            if current.status is BatchStatus.closed:
                return current
            if release_id is not None:
                holder = connection.execute(
                    "SELECT batch_id FROM batches WHERE release_id = ?", (release_id,)
                ).fetchone()
                if holder is not None:
                    raise ReleaseConflict(f"release {release_id!r} already closed batch {holder[0]!r}")
            connection.execute(
                "UPDATE batches SET status = 'closed', closed_us = ?, close_reason = ?, release_id = ?, "
                "session_count = (SELECT COUNT(*) FROM sessions WHERE batch_id = ?) WHERE batch_id = ?",
                (to_micros(closed_at), reason, release_id, batch_id, batch_id),
            )
            return self._batch(connection, batch_id)  # type: ignore[return-value]

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        return self._batch(self._connection(), batch_id)

    def find_batch_by_release(self, release_id: str) -> BatchRecord | None:
        row = self._connection().execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE release_id = ?", (release_id,)
        ).fetchone()
        return None if row is None else _batch_record(row)

    def list_batches(self, status: BatchStatus | None = None, limit: int = 100) -> list[BatchRecord]:
        where, params = ("", ()) if status is None else ("WHERE status = ?", (BatchStatus(status).value,))
        rows = self._connection().execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches {where} ORDER BY opened_us DESC, rowid DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [_batch_record(row) for row in rows]

    def mark_announced(self, batch_id: str, announced_at: datetime) -> bool:
        with self._write() as connection:
            row = connection.execute(
                "SELECT status, announced_us FROM batches WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                raise BatchNotFound(batch_id)
            if row[0] != BatchStatus.closed.value:
                raise BatchNotClosed(f"batch {batch_id!r} is {row[0]}")
            if row[1] is not None:
                return False
            connection.execute(
                "UPDATE batches SET announced_us = ? WHERE batch_id = ?", (to_micros(announced_at), batch_id)
            )
            return True

    def list_unannounced(self, limit: int = 1000) -> list[BatchRecord]:
        rows = self._connection().execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status = 'closed' AND announced_us IS NULL "
            "ORDER BY closed_us, batch_id LIMIT ?",
            (limit,),
        ).fetchall()
        return [_batch_record(row) for row in rows]

    def _batch(self, connection: sqlite3.Connection, batch_id: str) -> BatchRecord | None:
        row = connection.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return None if row is None else _batch_record(row)

    def _require_open(self, connection: sqlite3.Connection, batch_id: str) -> None:
        row = connection.execute("SELECT status FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            raise BatchNotFound(batch_id)
        if row[0] != BatchStatus.open.value:
            raise BatchNotOpen(f"batch {batch_id!r} is {row[0]}")

    # --- open sessions ------------------------------------------------------------------------------
    def load_open_sessions(self, session_ids: Iterable[str]) -> dict[str, OpenSession]:
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return {}
        # One statement whatever the number of ids: json_each expands a single JSON parameter, so
        # the call never meets SQLite's limit on bound variables.
        rows = self._connection().execute(
            "SELECT session_id, body FROM open_sessions WHERE session_id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()
        return {session_id: open_session(body) for session_id, body in rows}

    def save_open_sessions(self, sessions: Iterable[OpenSession]) -> None:
        rows = [
            (
                s.session_id,
                s.partition,
                to_micros(s.last_seen_at),
                None if s.closed_at is None else to_micros(s.closed_at),
                open_session_body(s),
            )
            for s in sessions
        ]
        if not rows:
            return
        with self._write() as connection:
            connection.executemany(
                "INSERT INTO open_sessions (session_id, partition, last_seen_us, closed_us, body) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
                "partition = excluded.partition, last_seen_us = excluded.last_seen_us, "
                "closed_us = excluded.closed_us, body = excluded.body",
                rows,
            )

    def iter_idle_open_sessions(self, partitions: Iterable[int], last_seen_before: datetime) -> Iterator[OpenSession]:
        connection = self._connection()
        before = to_micros(last_seen_before)
        for partition in sorted(set(partitions)):
            # Pages, fully fetched before anything is yielded: the caller typically closes the
            # sessions it gets (saving tombstones through this same connection), and a cursor left
            # open over rows being changed would be both a lock holder and a source of surprises.
            after: tuple[int, str] = (-1, "")
            while True:
                page = connection.execute(
                    "SELECT last_seen_us, session_id, body FROM open_sessions "
                    "WHERE partition = ? AND closed_us IS NULL AND last_seen_us < ? "
                    "AND (last_seen_us, session_id) > (?, ?) "
                    "ORDER BY last_seen_us, session_id LIMIT ?",
                    (partition, before, *after, _IDLE_PAGE),
                ).fetchall()
                for _, _, body in page:
                    yield open_session(body)
                if len(page) < _IDLE_PAGE:
                    break
                after = (page[-1][0], page[-1][1])

    def purge_tombstones(self, closed_before: datetime) -> int:
        with self._write() as connection:
            return connection.execute(
                "DELETE FROM open_sessions WHERE closed_us IS NOT NULL AND closed_us < ?", (to_micros(closed_before),)
            ).rowcount


def _batch_record(row: tuple) -> BatchRecord:
    batch_id, status, opened_us, closed_us, session_count, close_reason, release_id = row
    return BatchRecord(
        batch_id=batch_id,
        status=BatchStatus(status),
        opened_at=from_micros(opened_us),
        closed_at=None if closed_us is None else from_micros(closed_us),
        session_count=session_count,
        close_reason=close_reason,
        release_id=release_id,
    )
