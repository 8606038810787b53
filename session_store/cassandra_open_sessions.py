"""The sessionizer's open-session state on Cassandra, and the time-bucketed indexes that find it.

- ``open_sessions (session_id)``: the state itself, looked up by id. A tombstone (a closed
  session's state) is written with a TTL and expires by itself.
- ``open_index ((partition, bucket_us, shard), session_id)``: a session saved open on a
  clickstream partition while the bucket was current (rules in ``session_store/time_index.py``).
  ``open_index_buckets ((partition), bucket_us)`` lists the buckets that may still own an open
  session. An idle scan with cutoff T reads that list up to T, then only those buckets, and
  forgets the buckets it found settled: in steady state a scan reads the bucket that just passed
  T, the one whose idle sessions the previous scan handed out, and the list's few rows — not every
  open session of its partitions.
- ``tombstone_index`` / ``tombstone_index_buckets``: the same by close time, for the purge.

Order of writes in a save: bucket list, entry, state. A save cut short leaves at worst an entry
without its state (ignored), never an open state whose bucket is not listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, Protocol

from cassandra.query import UNSET_VALUE

from schemas.base import utc_now
from schemas.sessions import OpenSession
from session_store.cassandra_schema import OPEN_INDEX_SHARDS, OPEN_INDEX_TTL_S, SINGLETON
from session_store.records import open_session, open_session_body, stable_bucket
from session_store.time_index import (
    FORGET_MARGIN_US,
    Entry,
    StateTimes,
    TimeBuckets,
    forgettable_runs,
    judge_bucket,
)
from session_store.timestamps import to_micros

_SCAN_PAGE = 1000


class Executor(Protocol):
    def execute(self, name: str, params: Sequence[Any]) -> Any: ...

    def execute_many(self, name: str, params: Sequence[Sequence[Any]]) -> list[Any]: ...

    def pages(self, name: str, params: Sequence[Any], page_size: int) -> Iterator[Any]: ...


class CassandraOpenSessions:
    def __init__(self, db: Executor, *, bucket_width_s: float, tombstone_ttl_s: int) -> None:
        self.db = db
        self.buckets = TimeBuckets(int(bucket_width_s * 1_000_000))
        self.tombstone_ttl_s = int(tombstone_ttl_s)
        self._known_partitions: set[int] = set()

    # --- by id ----------------------------------------------------------------------------------
    def load(self, session_ids: Iterable[str]) -> dict[str, OpenSession]:
        ids = list(dict.fromkeys(session_ids))
        states: dict[str, OpenSession] = {}
        for session_id, result in zip(ids, self.db.execute_many("open_session", [(sid,) for sid in ids])):
            row = result.one()
            if row is not None:
                states[session_id] = open_session(row.body)
        return states

    def _times(self, session_ids: list[str]) -> dict[str, StateTimes]:
        times: dict[str, StateTimes] = {}
        for session_id, result in zip(session_ids, self.db.execute_many(
                "open_session_times", [(sid,) for sid in session_ids])):
            row = result.one()
            if row is not None:
                times[session_id] = StateTimes(row.partition, row.last_seen_us, row.closed_us)
        return times

    # --- saving -----------------------------------------------------------------------------------
    def save(self, sessions: Iterable[OpenSession]) -> None:
        states = list(sessions)
        if not states:
            return
        new_partitions = {s.partition for s in states} - self._known_partitions
        self.db.execute_many("insert_open_partition", [(SINGLETON, p) for p in sorted(new_partitions)])
        self._known_partitions |= new_partitions
        start, width, ttl = self.buckets.start, self.buckets.width_us, self.tombstone_ttl_s
        live = [(s, to_micros(s.last_seen_at)) for s in states if s.closed_at is None]
        ended = [(s, to_micros(s.last_seen_at), to_micros(s.closed_at)) for s in states if s.closed_at is not None]
        # The index first (see the module's docstring). The bucket list is written on every save,
        # not once per bucket: a row re-written after a scan forgot its bucket brings it back.
        self.db.execute_many("list_open_bucket", [
            (partition, bucket, OPEN_INDEX_TTL_S) for partition, bucket in sorted({(s.partition, start(seen))
                                                                                   for s, seen in live})])
        self.db.execute_many("upsert_open_index", [
            (s.partition, start(seen), stable_bucket(s.session_id, OPEN_INDEX_SHARDS), s.session_id, seen, width,
             OPEN_INDEX_TTL_S) for s, seen in live])
        self.db.execute_many("list_tombstone_bucket", [
            (partition, bucket, ttl) for partition, bucket in sorted({(s.partition, start(closed))
                                                                      for s, _, closed in ended})])
        self.db.execute_many("upsert_tombstone_index", [
            (s.partition, start(closed), stable_bucket(s.session_id, OPEN_INDEX_SHARDS), s.session_id, closed, ttl)
            for s, _, closed in ended])
        # An open state leaves closed_us unset rather than null: binding None would write a
        # Cassandra tombstone on every save. A state never reopens, so there is never one to clear.
        self.db.execute_many("upsert_open_session", [
            (s.session_id, s.partition, seen, UNSET_VALUE, open_session_body(s)) for s, seen in live])
        self.db.execute_many("upsert_tombstone", [
            (s.session_id, s.partition, seen, closed, open_session_body(s), ttl) for s, seen, closed in ended])

    # --- the idle scan ------------------------------------------------------------------------------
    def iter_idle(self, partitions: Iterable[int], last_seen_before: datetime) -> Iterator[OpenSession]:
        before = to_micros(last_seen_before)
        limit = min(before, to_micros(utc_now()) - FORGET_MARGIN_US)
        for partition in sorted(set(partitions)):
            yield from self._idle_in(partition, before, limit)

    def _idle_in(self, partition: int, before: int, limit: int) -> Iterator[OpenSession]:
        listed = [row.bucket_us for row in self.db.pages("open_buckets", (partition, before), _SCAN_PAGE)]
        verdicts: list[tuple[int, bool, int]] = []
        handed_out: set[str] = set()
        for bucket in listed:
            settled, widest = True, self.buckets.width_us
            for rows in self._bucket_pages("open_index_shard", partition, bucket):
                entries = [Entry(row.session_id, row.last_seen_us, row.width_us) for row in rows]
                widest = max([widest, *(entry.width_us for entry in entries)])
                times = self._times([entry.session_id for entry in entries if entry.last_seen_us < before])
                verdict = judge_bucket(partition, bucket, entries, times, before)
                settled = settled and verdict.settled
                idle = [sid for sid in verdict.idle if sid not in handed_out]
                handed_out.update(idle)
                for state in self.load(idle).values():
                    if state.closed_at is None and state.partition == partition:
                        yield state
            verdicts.append((bucket, settled, bucket + widest))
        # Reached only when the caller took every idle session: a scan given up half-way forgets nothing.
        for first, last in forgettable_runs(verdicts, limit):
            self.db.execute("forget_open_buckets", (partition, first, last))

    def _bucket_pages(self, statement: str, partition: int, bucket: int) -> Iterator[list[Any]]:
        """The rows of every shard of one bucket, a page at a time."""
        for shard in range(OPEN_INDEX_SHARDS):
            rows = self.db.pages(statement, (partition, bucket, shard), _SCAN_PAGE)
            while page := list(islice(rows, _SCAN_PAGE)):
                yield page

    # --- the purge ----------------------------------------------------------------------------------
    def purge(self, closed_before: datetime) -> int:
        """Forget tombstones closed before the time. On a running system it finds little: the
        sessionizer purges at now minus the tombstone TTL, when the TTL has expired them already."""
        before = to_micros(closed_before)
        limit = min(before, to_micros(utc_now()) - FORGET_MARGIN_US)
        purged = 0
        partitions = [row.partition for row in self.db.pages("open_partitions", (SINGLETON,), _SCAN_PAGE)]
        for partition in partitions:
            verdicts: list[tuple[int, bool, int]] = []
            for bucket in [row.bucket_us for row in self.db.pages("tombstone_buckets", (partition, before), _SCAN_PAGE)]:
                settled = True
                for rows in self._bucket_pages("tombstone_index_shard", partition, bucket):
                    expired = [row.session_id for row in rows if row.closed_us < before]
                    settled = settled and len(expired) == len(rows)
                    doomed = [sid for sid, t in self._times(expired).items()
                              if t.closed_us is not None and t.closed_us < before]
                    self.db.execute_many("delete_open_session", [(sid,) for sid in doomed])
                    purged += len(doomed)
                verdicts.append((bucket, settled, bucket + self.buckets.width_us))
            for first, last in forgettable_runs(verdicts, limit):
                self.db.execute("forget_tombstone_buckets", (partition, first, last))
        return purged

    # --- schema version 3 -------------------------------------------------------------------------
    def backfill(self, legacy_ids: Iterator[str]) -> int:
        """Enter the states the version-2 index knew into the time-bucketed indexes (re-saving
        them: a tombstone's TTL starts again). Idempotent: every write is an upsert."""
        count = 0
        while ids := list(islice(legacy_ids, _SCAN_PAGE)):
            states = self.load(ids)
            self.save(states.values())
            count += len(states)
        return count
