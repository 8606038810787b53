"""Replay: raw clickstream of a time range, read again from Kafka, sessionized into batches of its own.

The stream worker's rules are applied as they are: every record is checked by
``raw_events.check_raw_event`` and every session's events go through ``sessionizer.apply_events``,
in the order of their partition, exactly as the live loop does. What differs is only where the
working state lives and when sessions close at the edges of the range:

- the range is ``[start, end)`` of Kafka record timestamps. Each partition is read from
  ``offsets_for_times(start)`` until its first record stamped at or after ``end``, or until the end
  of the partition as the broker reports it while reading (end-of-partition events, not a
  ListOffsets look-up: some brokers answer that one wrongly), whichever comes first; records
  stamped before ``start`` met on the way are skipped;
- the working state is kept in memory for the run (never in the store's open sessions, which
  belong to the live sessionizer), so a replay cannot disturb the stream worker;
- sessions still open when the range has been read close *at the range end*, as if the range end
  were a wall clock past their gap (reason ``gap``; their ``closed_at`` is their latest event, as
  for every session). A session whose search lies before ``start`` arrives without it and is
  dropped as an orphan; one that goes on after ``end`` keeps only its events up to ``end``;
- invalid records are counted and skipped, not dead-lettered again (the live worker already did).

Determinism. Every session's content depends only on its own records, read in partition order,
and on the range end: never on how partitions interleave or how reads are chunked. Replaying the
same range with the same rules therefore gives the same sessions. The range id is derived from the
topic, the range, the rules and the batch size (``replay-<sha256>``), and each replayed session's
id is its original id with ``@<range id>`` appended (the store keeps a session id in one batch only,
and the original ids are normally already in the live batches).

Batches by size. A range's sessions are split into batches of at most ``max_sessions``
(``ES_BATCH_MAX_SESSIONS``, the live batches' bound) so that no replay makes a batch, or a Cassandra
partition of one, larger than the live stream could: all sessions of the range are ordered by
(created_at, session id) — an order that depends only on the sessions — and cut every
``max_sessions``; part k is batch ``<range id>-p<k>`` (k from 1). The parts are written last to
first, so part 1 being closed means every part is. A replay of a range already replayed therefore
finds part 1 closed and reuses the parts as they are (nothing is read or written again); a replay
cut short is completed — closed parts stay, an open part keeps its sessions and gets the missing
ones.

Memory: the working state of every session of the range stays in memory until the end (a closed
session keeps only a small tombstone, so that its late events are recognised as late); the closed
sessions themselves wait in a temporary spool file.

Each batch is opened with ``opened_at`` = the range start, filled from the spool file after the
whole range is read (so it is open only while its sessions are written), and closed with reason
``replay``. Only each session's sort key and spool position are held to order them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from messaging import BrokerUnavailable, KafkaCluster, ReadError, TopicMissing, TopicReader
from schemas.sessions import BatchRecord, ClosedSession, OpenSession
from session_store.base import SessionStore
from stream_processors.raw_events import check_raw_event
from stream_processors.replay_batches import (
    REPLAY_BATCH_PREFIX,
    complete_parts,
    part_batch_id,
    parts,
    read_at,
    spool_sessions,
    write_batch,
)

__all__ = ["REPLAY_BATCH_PREFIX", "RangeReader", "RangeSessionizer", "ReplayError", "ReplayRange", "ReplayResult",
           "ReplayStats", "original_session_id", "part_batch_id", "replay_range", "replay_session_id", "write_batch"]
from stream_processors.sessionizer import Arrival, Outcome, SessionRules, apply_events, close_idle

log = logging.getLogger(__name__)

_MAX_ID = 256  # schemas.base.Identifier


class ReplayError(RuntimeError):
    """The replay could not read its range (missing topic, broker trouble, timeout)."""


# --- the range and the names derived from it -------------------------------------------------------
@dataclass(frozen=True)
class ReplayRange:
    topic: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("replay range times must be timezone-aware")
        if self.end_ms <= self.start_ms:
            raise ValueError(f"the range is empty: it ends ({self.end.isoformat()}) at or before it starts "
                             f"({self.start.isoformat()})")

    @property
    def start_ms(self) -> int:
        return _to_ms(self.start)

    @property
    def end_ms(self) -> int:
        return _to_ms(self.end)

    def range_id(self, rules: SessionRules, max_event_bytes: int, max_sessions: int) -> str:
        """The same topic, range, rules and batch size always name the same replay."""
        material = json.dumps([
            self.topic, self.start_ms, self.end_ms, rules.gap.total_seconds(), rules.max_events,
            rules.max_duration.total_seconds(), max_event_bytes, max_sessions,
        ])
        return REPLAY_BATCH_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:20]


def replay_session_id(session_id: str, batch_id: str) -> str:
    """``<session_id>@<batch_id>``; an original id too long for that is replaced by its hash."""
    suffix = f"@{batch_id}"
    if len(session_id) + len(suffix) > _MAX_ID:
        session_id = "sha256-" + hashlib.sha256(session_id.encode()).hexdigest()
    return session_id + suffix


def original_session_id(replayed_id: str) -> str:
    return replayed_id.rpartition("@")[0] or replayed_id


def _to_ms(moment: datetime) -> int:
    # Integer arithmetic: a float timestamp could round a microsecond boundary differently.
    delta = moment.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


# --- what a replay counts --------------------------------------------------------------------------
@dataclass
class ReplayStats:
    partitions: int = 0
    records_scanned: int = 0  # every record looked at, in the range or not
    events_read: int = 0  # records in the range, valid or not
    invalid: Counter[str] = field(default_factory=Counter)  # kind of problem -> records
    invalid_examples: list[str] = field(default_factory=list)
    sessions: int = 0
    closed_by: Counter[str] = field(default_factory=Counter)  # close reason -> sessions
    closed_at_range_end: int = 0
    orphans: int = 0  # sessions without a search (nothing to train on): dropped
    late_events: int = 0
    duplicates: int = 0

    @property
    def invalid_events(self) -> int:
        return sum(self.invalid.values())

    def count_invalid(self, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        if kind.startswith("key ") and "differs from session_id" in kind:
            kind = "key differs from session_id"
        self.invalid[kind] += 1
        if len(self.invalid_examples) < 5:
            self.invalid_examples.append(reason[:300])


# --- the sessionizer over a range ------------------------------------------------------------------
RawRecord = tuple[int, int, "bytes | None", "bytes | None"]
"""(partition, offset, key, value) of one raw clickstream record."""


class RangeSessionizer:
    """The stream worker's sessionizer rules with an in-memory working state.

    ``feed`` takes raw records (several partitions mixed, each partition in offset order) and
    returns the sessions they closed; ``finish`` closes what is still open at ``closes_at``.
    Returned sessions already carry their replay id (``replay_session_id``)."""

    def __init__(self, rules: SessionRules, max_event_bytes: int, batch_id: str, closes_at: datetime,
                 stats: ReplayStats | None = None) -> None:
        self.rules = rules
        self.max_event_bytes = max_event_bytes
        self.batch_id = batch_id
        self.closes_at = closes_at
        self.stats = stats or ReplayStats()
        self._states: dict[str, OpenSession] = {}

    def feed(self, records: Iterable[RawRecord]) -> list[ClosedSession]:
        stats = self.stats
        by_session: dict[str, list[Arrival[None]]] = {}
        partition_of: dict[str, int] = {}
        for partition, offset, key, value in records:
            stats.events_read += 1
            event = check_raw_event(key, value, self.max_event_bytes)
            if isinstance(event, str):
                stats.count_invalid(event)
                continue
            arrivals = by_session.get(event.session_id)
            if arrivals is None:
                by_session[event.session_id] = arrivals = []
                partition_of[event.session_id] = partition
            arrivals.append(Arrival(event, offset))
        closed: list[ClosedSession] = []
        for session_id, arrivals in by_session.items():
            outcome = apply_events(
                self._states.get(session_id), arrivals, session_id=session_id,
                partition=partition_of[session_id], now=self.closes_at, rules=self.rules,
            )
            self._collect(outcome, closed)
        return closed

    def finish(self) -> list[ClosedSession]:
        """Close every session still open, at the range end; forget the working state."""
        closed: list[ClosedSession] = []
        still_open = sorted(sid for sid, state in self._states.items() if state.closed_at is None)
        for session_id in still_open:
            before = len(closed)
            self._collect(close_idle(self._states[session_id], now=self.closes_at), closed)
            self.stats.closed_at_range_end += len(closed) - before
        self._states.clear()
        return closed

    def _collect(self, outcome: Outcome, closed: list[ClosedSession]) -> None:
        stats = self.stats
        if outcome.state is not None:
            self._states[outcome.state.session_id] = outcome.state
        if outcome.closed is not None:
            session = outcome.closed
            closed.append(session.model_copy(
                update={"session_id": replay_session_id(session.session_id, self.batch_id)}))
            stats.sessions += 1
            stats.closed_by[session.close_reason] += 1
        if outcome.orphan is not None:
            stats.orphans += 1
        stats.late_events += len(outcome.late)
        stats.duplicates += outcome.duplicates


# --- reading the range from Kafka ------------------------------------------------------------------
class RangeReader:
    """Reads one ``ReplayRange`` of a topic with ``messaging.TopicReader`` (assigned partitions, no
    consumer group): each partition from its first record stamped at or after the start, until its
    first record stamped at or after the end or its end of partition."""

    def __init__(self, bootstrap: KafkaCluster | str, replay_range: ReplayRange, *, chunk: int = 20_000,
                 timeout_s: float = 600.0, consumer_config: dict[str, Any] | None = None) -> None:
        self.range = replay_range
        self.chunk = chunk
        self.timeout_s = timeout_s
        self._cluster = bootstrap
        self._config = {"fetch.max.bytes": 64 << 20, **(consumer_config or {})}
        self._reader: TopicReader | None = None
        self.starts: dict[int, int] = {}
        self.partitions: list[int] = []
        self.estimate: int | None = None  # records to scan, from the broker's end offsets: a hint only

    def __enter__(self) -> "RangeReader":
        try:
            self._reader = TopicReader(self._cluster, self.range.topic, starts={}, extra_config=self._config)
            self._plan()
        except TopicMissing as error:
            self.close()
            raise ReplayError(f"topic {self.range.topic} does not exist") from error
        except (BrokerUnavailable, ReadError) as error:
            self.close()
            raise ReplayError(str(error)) from error
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _plan(self) -> None:
        assert self._reader is not None
        self.partitions = self._reader.partitions
        self.starts = self._reader.offsets_for_time(self.range.start_ms)
        self._reader.seek(self.starts)
        ends = self._reader.end_offsets()
        self.estimate = sum(max(0, ends[p] - offset) for p, offset in self.starts.items() if p in ends)

    def chunks(self, on_scanned: Callable[[int], None] | None = None) -> Iterator[list[RawRecord]]:
        """Records of the range, a chunk at a time, each partition in offset order."""
        reader = self._reader
        assert reader is not None, "use the reader as a context manager"
        start_ms, end_ms = self.range.start_ms, self.range.end_ms
        try:
            for messages in reader.until_caught_up(self.timeout_s, self.chunk):
                records: list[RawRecord] = []
                scanned = 0
                for message in messages:
                    partition = message.partition()
                    if not reader.is_reading(partition):
                        continue  # fetched before the partition was finished
                    scanned += 1
                    kind, stamp = message.timestamp()
                    if kind != 0 and stamp >= end_ms:  # 0: TIMESTAMP_NOT_AVAILABLE, kept
                        reader.finish(partition)
                        continue
                    if kind != 0 and stamp < start_ms:
                        continue
                    records.append((partition, message.offset(), message.key(), message.value()))
                if on_scanned is not None and scanned:
                    on_scanned(scanned)
                if records:
                    yield records
        except ReadError as error:
            raise ReplayError(str(error)) from error


# --- the whole replay ------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    range_id: str
    batches: list[BatchRecord]  # in part order; empty: the range held no session
    stats: ReplayStats
    reused: bool = False  # the batches were complete from an earlier replay: nothing was read
    added: int = 0  # sessions this run wrote (fewer than stats.sessions when completing a cut-short replay)


def replay_range(
    *,
    bootstrap: KafkaCluster | str,
    replay_range: ReplayRange,
    store: SessionStore,
    rules: SessionRules,
    max_event_bytes: int,
    max_sessions: int,
    chunk: int = 20_000,
    timeout_s: float = 600.0,
    on_estimate: Callable[[int | None], None] | None = None,
    on_scanned: Callable[[int], None] | None = None,
    consumer_config: dict[str, Any] | None = None,
) -> ReplayResult:
    """Sessionize the range into batches of at most ``max_sessions`` in ``store``, each closed (reason
    ``replay``)."""
    if max_sessions < 1:
        raise ValueError("max_sessions must be at least 1")
    range_id = replay_range.range_id(rules, max_event_bytes, max_sessions)
    stats = ReplayStats()
    done = complete_parts(store, range_id)
    if done:
        return ReplayResult(range_id, done, stats, reused=True)
    sessionizer = RangeSessionizer(rules, max_event_bytes, range_id, replay_range.end, stats)
    with tempfile.TemporaryFile(prefix="es-replay-") as spool:
        with RangeReader(bootstrap, replay_range, chunk=chunk, timeout_s=timeout_s,
                         consumer_config=consumer_config) as reader:
            stats.partitions = len(reader.partitions)
            if on_estimate is not None:
                on_estimate(reader.estimate)

            def scanned(count: int) -> None:
                stats.records_scanned += count
                if on_scanned is not None:
                    on_scanned(count)

            for records in reader.chunks(scanned):
                spool_sessions(spool, sessionizer.feed(records))
        spool_sessions(spool, sessionizer.finish())
        if stats.sessions == 0:
            return ReplayResult(range_id, [], stats)
        cut = parts(spool, max_sessions)
        batches: list[BatchRecord] = []
        added = 0
        for number in range(len(cut), 0, -1):  # last to first: part 1 closed means all are
            record, written = write_batch(store, part_batch_id(range_id, number), replay_range.start,
                                          read_at(spool, cut[number - 1]))
            batches.insert(0, record)
            added += written
    return ReplayResult(range_id, batches, stats, added=added)
