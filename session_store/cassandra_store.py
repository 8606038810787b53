"""The session store on Apache Cassandra (cassandra-driver 3.30).

The data model (``session_store/cassandra_schema.py``: tables, the bound on each one's partitions,
statements) keeps one table per access pattern, and every query names a whole partition key:

- ``sessions_by_batch ((batch_id, bucket), session_id)`` holds the sessions. ``bucket`` is a
  stable hash of the session id modulo ``SESSION_BUCKETS``, so a 10,000-session batch is 16
  partitions of a few MB instead of one wide one; the trainer reads them bucket by bucket.
- ``session_batch (session_id)`` says which batch a session went to: the "first batch wins" check
  (an LWT) and ``get_session``'s way in. Its rows expire after the claim TTL.
- ``batches (batch_id)`` is the batch state machine, written *only* with lightweight transactions
  (Paxos): opened with ``INSERT ... IF NOT EXISTS``, closed with ``UPDATE ... IF status = 'open'``.
  Mixing plain writes into LWT-managed rows breaks their ordering guarantees, so everything
  listing-related lives in separate, plainly written tables.
- ``batch_by_release (release_id)`` claims a release id for one batch, also by LWT.
- ``batch_days`` + ``batches_by_day`` list batches newest first without a table scan;
  ``current_batch`` points at the batch being collected. These are indexes: the authoritative
  state is always re-read from ``batches``.
- the sessionizer's open-session state and its time-bucketed indexes: see
  ``session_store/cassandra_open_sessions.py``.

Consistency: LOCAL_QUORUM for reads and writes, LOCAL_SERIAL for the Paxos phase of LWTs and for
reads of LWT-managed rows on a decision path, token-aware routing within the local DC.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from cassandra.query import UNSET_VALUE

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
from session_store.cassandra_open_sessions import CassandraOpenSessions
from session_store.cassandra_db import CassandraDatabase
from session_store.cassandra_schema import (
    LEGACY_INDEX_BUCKETS,
    LEGACY_STATEMENTS,
    SCHEMA_VERSION,
    SESSION_BUCKETS,
    SINGLETON,
    STATEMENTS,
    TABLES,
)
from session_store.records import session_body, stable_bucket, stored_session
from session_store.timestamps import from_micros, to_micros
from session_store.urls import CassandraUrl

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = ["CassandraSessionStore", "SCHEMA_VERSION", "STATEMENTS", "TABLES"]

log = logging.getLogger(__name__)

# A closed session's state (its tombstone) expires by itself after this: late events for it are
# recognised as late for a week (ES_SESSION_TOMBSTONE_TTL_S's default), and no purge scan or
# delete (a Cassandra tombstone of its own) is needed.
TOMBSTONE_TTL_S = 7 * 24 * 3600
# Which batch a session went to is remembered this long (ES_CASSANDRA_SESSION_CLAIM_TTL_S's
# default): a duplicate of a session older than that would be stored again.
SESSION_CLAIM_TTL_S = 30 * 24 * 3600
OPEN_INDEX_BUCKET_S = 60.0
_SCAN_PAGE = 1000
# Closed batches a takeover looks at for missing announcements, newest first: a batch older than
# the newest thousand closed ones was announced, or marked, long ago.
UNANNOUNCED_SCAN = 1000


def _day(opened_us: int) -> date:
    return from_micros(opened_us).date()


class CassandraSessionStore(SessionStore):
    def __init__(self, url: str | CassandraUrl, *, request_timeout_s: float = 15.0,
                 tombstone_ttl_s: float = TOMBSTONE_TTL_S, session_claim_ttl_s: float = SESSION_CLAIM_TTL_S,
                 open_index_bucket_s: float = OPEN_INDEX_BUCKET_S) -> None:
        self.db = CassandraDatabase(url, request_timeout_s=request_timeout_s)
        self.url, self.session = self.db.url, self.db.session
        self.session_claim_ttl_s = int(session_claim_ttl_s)
        self.open_states = CassandraOpenSessions(
            self.db, bucket_width_s=open_index_bucket_s, tombstone_ttl_s=int(tombstone_ttl_s))

    @classmethod
    def from_url(cls, url: str) -> "CassandraSessionStore":
        return cls(url)

    @classmethod
    def from_settings(cls, url: str, settings: "Settings") -> "CassandraSessionStore":
        return cls(url, tombstone_ttl_s=settings.session_tombstone_ttl_s,
                   session_claim_ttl_s=settings.cassandra_session_claim_ttl_s,
                   open_index_bucket_s=settings.cassandra_open_index_bucket_s)

    def close(self) -> None:
        self.db.close()

    # --- schema ---------------------------------------------------------------------------------
    def init_schema(self) -> int:
        """Create the keyspace (if missing) and apply the migrations not yet recorded.

        Run it from one process at a time (``embedding-studio store init``): concurrent DDL of
        the same table from two clients can leave the cluster with disagreeing schemas."""
        return self.db.init_schema({"backfill_time_index": self.backfill_time_index})

    def backfill_time_index(self) -> None:
        """Version 3: the states the old per-partition index knew, entered into the time-bucketed
        indexes before that table is dropped (a worker must not start on version 3 with open
        sessions its idle scan cannot see)."""
        with self.db.migrating():
            legacy = self.db.session.prepare(LEGACY_STATEMENTS["legacy_open_index"])
            partitions = [row.partition for row in self.db.pages("open_partitions", (SINGLETON,), _SCAN_PAGE)]

            def legacy_ids() -> Iterator[str]:
                for partition in partitions:
                    for bucket in range(LEGACY_INDEX_BUCKETS):
                        for row in self.db.session.execute(legacy.bind((partition, bucket))):  # the driver pages
                            yield row.session_id

            moved = self.open_states.backfill(legacy_ids())
            log.info("Cassandra store %s: %d open-session states entered into the time-bucketed index",
                     self.url.redacted(), moved)

    # --- sessions ---------------------------------------------------------------------------------
    def claim_batcher(self) -> int:
        while True:  # compare-and-set by LWT; a lost race reads the winner's epoch and tries again
            row = self.db.execute("batcher_epoch", (SINGLETON,)).one()
            if row is None:
                if self.db.execute("first_batcher", (SINGLETON, 1)).was_applied:
                    return 1
                continue
            if self.db.execute("next_batcher", (row.epoch + 1, SINGLETON, row.epoch)).was_applied:
                return row.epoch + 1

    def _require_epoch(self, epoch: int | None) -> None:
        # A serial read before the writes, not one atomic step with them (no transaction spans
        # Cassandra partitions): a batcher superseded in between may still write one call's
        # sessions, which the session claim (LWT) keeps in at most one batch.
        if epoch is None:
            return
        row = self.db.execute("batcher_epoch", (SINGLETON,)).one()
        if row is None or row.epoch != epoch:
            raise StaleBatcher(f"batcher epoch {epoch} is stale (newest: {row.epoch if row else None})")

    def put_sessions(self, batch_id: str, sessions: Iterable[ClosedSession], *, epoch: int | None = None) -> int:
        self._require_epoch(epoch)
        batch = self.get_batch(batch_id)
        if batch is None:
            raise BatchNotFound(batch_id)
        if batch.status is not BatchStatus.open:
            raise BatchNotOpen(f"batch {batch_id!r} is {batch.status.value}")
        unique: dict[str, ClosedSession] = {}
        for session in sessions:
            unique.setdefault(session.session_id, session)
        ids = list(unique)
        # The claim first, by LWT (IF NOT EXISTS): two batchers overlapping in a rebalance cannot
        # both put a session in a batch. It costs a Paxos round per session (64 in flight), the
        # price of "at most one batch" without a single writer to trust. A crash between the
        # claim and the row leaves a claim naming this batch: the retry finds it and writes the row.
        claims = self.db.execute_many("claim_session_batch", [(sid, batch_id, self.session_claim_ttl_s) for sid in ids])
        mine: list[ClosedSession] = []
        new = 0
        for sid, claim in zip(ids, claims):
            if claim.was_applied:
                new += 1
                mine.append(unique[sid])
            elif claim.one().batch_id == batch_id:
                mine.append(unique[sid])  # claimed by an earlier try of this call: the row is rewritten as is
        self.db.execute_many(
            "insert_session",
            [
                (batch_id, stable_bucket(s.session_id, SESSION_BUCKETS), s.session_id, to_micros(s.created_at),
                 to_micros(s.closed_at), session_body(s))
                for s in mine
            ],
        )
        return new

    def get_session(self, session_id: str) -> StoredSession | None:
        """Found through the session's claim, so for ``session_claim_ttl_s`` after it was stored;
        ``iter_sessions`` reads it for as long as its batch is kept."""
        lookup = self.db.execute("session_batch", (session_id,)).one()
        if lookup is None:
            return None
        row = self.db.execute(
            "session", (lookup.batch_id, stable_bucket(session_id, SESSION_BUCKETS), session_id)
        ).one()
        return None if row is None else stored_session(lookup.batch_id, row.body)

    def iter_sessions(self, batch_id: str, page_size: int = 500) -> Iterator[StoredSession]:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        # Order: bucket, then session_id (the clustering order) — stable across reads.
        for bucket in range(SESSION_BUCKETS):
            for row in self.db.pages("bucket_sessions", (batch_id, bucket), page_size):
                yield stored_session(batch_id, row.body)

    def count_sessions(self, batch_id: str) -> int:
        counts = self.db.execute_many("bucket_count", [(batch_id, bucket) for bucket in range(SESSION_BUCKETS)])
        return sum(result.one()[0] for result in counts)

    # --- batches ------------------------------------------------------------------------------------
    def open_batch(self, batch_id: str, opened_at: datetime) -> BatchRecord:
        opened_us = to_micros(opened_at)
        result = self.db.execute("open_batch", (batch_id, opened_us))
        if result.was_applied:
            record = BatchRecord(batch_id=batch_id, status=BatchStatus.open, opened_at=from_micros(opened_us))
        else:
            record = _batch_record(result.one())  # a failed IF NOT EXISTS returns the existing row
        self._index_batch(record)
        if record.status is BatchStatus.open:
            self.db.execute("set_current_batch", (SINGLETON, batch_id))
        return record

    def _index_batch(self, record: BatchRecord) -> None:
        # Plain idempotent upserts, repeated on every open and close so that a crash between the
        # LWT and these writes is repaired by the retry.
        opened_us = to_micros(record.opened_at)
        day = _day(opened_us)
        self.db.execute("insert_batch_day", (SINGLETON, day))
        self.db.execute("insert_batch_by_day", (day, opened_us, record.batch_id))

    def get_open_batch(self) -> BatchRecord | None:
        """The batch most recently opened, while it is open: the batcher collects into one batch
        at a time, so one pointer (overwritten, never deleted, hence no tombstones) suffices."""
        pointer = self.db.execute("current_batch", (SINGLETON,)).one()
        if pointer is None:
            return None
        record = self.get_batch(pointer.batch_id)
        return record if record is not None and record.status is BatchStatus.open else None

    def close_batch(
        self, batch_id: str, closed_at: datetime, reason: BatchCloseReason, release_id: str | None = None,
        *, epoch: int | None = None,
    ) -> BatchRecord:
        self._require_epoch(epoch)
        current = self.get_batch(batch_id)
        if current is None:
            raise BatchNotFound(batch_id)
        if current.status is BatchStatus.closed:
            self._index_batch(current)
            return current
        if release_id is not None:
            claim = self.db.execute("claim_release", (release_id, batch_id))
            if not claim.was_applied and claim.one().batch_id != batch_id:
                raise ReleaseConflict(f"release {release_id!r} already closed batch {claim.one().batch_id!r}")
        count = self.count_sessions(batch_id)
        result = self.db.execute(
            "close_batch",
            (to_micros(closed_at), reason, UNSET_VALUE if release_id is None else release_id, count, batch_id),
        )
        if result.was_applied:
            record = BatchRecord(
                batch_id=batch_id, status=BatchStatus.closed, opened_at=current.opened_at,
                closed_at=from_micros(to_micros(closed_at)), session_count=count, close_reason=reason,
                release_id=release_id,
            )
        else:
            # Someone closed it first (a racing closer, or our own earlier attempt whose answer
            # was lost to a timeout): that close stands.
            record = self.get_batch(batch_id)  # type: ignore[assignment]
        self._index_batch(record)
        return record

    def mark_announced(self, batch_id: str, announced_at: datetime) -> bool:
        result = self.db.execute("mark_announced", (to_micros(announced_at), batch_id))
        if result.was_applied:
            return True
        row = result.one()  # the row as the failed condition found it (no row: unknown batch)
        if row is None or getattr(row, "status", None) is None:
            raise BatchNotFound(batch_id)
        if row.status != BatchStatus.closed.value:
            raise BatchNotClosed(f"batch {batch_id!r} is {row.status}")
        return False

    def list_unannounced(self, limit: int = 1000) -> list[BatchRecord]:
        closed = self.list_batches(BatchStatus.closed, limit=UNANNOUNCED_SCAN)
        marks = self.db.execute_many("batch_announced", [(b.batch_id,) for b in closed])
        missing = [b for b, result in zip(closed, marks) if (row := result.one()) is not None and row.announced_us is None]
        return sorted(missing, key=lambda b: (b.closed_at, b.batch_id))[:limit]

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = self.db.execute("batch", (batch_id,)).one()
        return None if row is None else _batch_record(row)

    def find_batch_by_release(self, release_id: str) -> BatchRecord | None:
        claim = self.db.execute("release_batch", (release_id,)).one()
        if claim is None:
            return None
        record = self.get_batch(claim.batch_id)
        # A claim whose close lost a race to another closer names a batch closed under a
        # different release; it does not count.
        return record if record is not None and record.release_id == release_id else None

    def list_batches(self, status: BatchStatus | None = None, limit: int = 100) -> list[BatchRecord]:
        wanted = None if status is None else BatchStatus(status)
        found: list[BatchRecord] = []
        if limit <= 0:
            return found
        for day_row in self.db.pages("batch_days", (SINGLETON,), _SCAN_PAGE):
            page: list[str] = []
            for row in self.db.pages("batches_of_day", (day_row.day,), _SCAN_PAGE):
                page.append(row.batch_id)
                if len(page) == _SCAN_PAGE:
                    if self._collect_batches(page, wanted, limit, found):
                        return found
                    page = []
            if self._collect_batches(page, wanted, limit, found):
                return found
        return found

    def _collect_batches(self, ids: list[str], wanted: BatchStatus | None, limit: int,
                         found: list[BatchRecord]) -> bool:
        """Append the records of ``ids`` (in order) that match; True once ``limit`` is reached."""
        for result in self.db.execute_many("batch", [(batch_id,) for batch_id in ids]):
            row = result.one()
            if row is None:
                continue
            record = _batch_record(row)
            if wanted is None or record.status is wanted:
                found.append(record)
                if len(found) >= limit:
                    return True
        return False

    # --- open sessions (session_store/cassandra_open_sessions.py) -----------------------------------
    def load_open_sessions(self, session_ids: Iterable[str]) -> dict[str, OpenSession]:
        return self.open_states.load(session_ids)

    def save_open_sessions(self, sessions: Iterable[OpenSession]) -> None:
        self.open_states.save(sessions)

    def iter_idle_open_sessions(self, partitions: Iterable[int], last_seen_before: datetime) -> Iterator[OpenSession]:
        return self.open_states.iter_idle(partitions, last_seen_before)

    def purge_tombstones(self, closed_before: datetime) -> int:
        return self.open_states.purge(closed_before)


def _batch_record(row: Any) -> BatchRecord:
    return BatchRecord(
        batch_id=row.batch_id,
        status=BatchStatus(row.status),
        opened_at=from_micros(row.opened_us),
        closed_at=None if row.closed_us is None else from_micros(row.closed_us),
        session_count=row.session_count or 0,
        close_reason=row.close_reason,
        release_id=row.release_id,
    )
