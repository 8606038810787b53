"""Where a replay's sessions wait and how they become batches: a spool file of closed sessions, cut
into parts of at most ``max_sessions`` in an order that depends only on the sessions, each part
written to the store as one batch closed with reason ``replay`` (see ``replay`` for the rules).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import IO

from schemas.base import utc_now
from schemas.sessions import BatchRecord, BatchStatus, ClosedSession
from session_store.base import SessionStore

REPLAY_BATCH_PREFIX = "replay-"
_WRITE_CHUNK = 1000


def part_batch_id(range_id: str, part: int) -> str:
    """The batch of the ``part``-th (from 1) ``max_sessions`` sessions of a replayed range."""
    return f"{range_id}-p{part}"


def complete_parts(store: SessionStore, range_id: str) -> list[BatchRecord]:
    """Every part of an earlier replay of the range, if it completed (its part 1 is closed); else []."""
    first = store.get_batch(part_batch_id(range_id, 1))
    if first is None or first.status is not BatchStatus.closed:
        return []
    parts = [first]
    while (record := store.get_batch(part_batch_id(range_id, len(parts) + 1))) is not None:
        parts.append(record)
    return parts


def parts(spool: IO[bytes], max_sessions: int) -> list[list[int]]:
    """Spool positions of the sessions, ordered by (created_at, session id), cut every ``max_sessions``."""
    spool.seek(0)
    keys: list[tuple[str, str, int]] = []
    position = 0
    for line in spool:
        if line.strip():
            session = json.loads(line)
            keys.append((_sort_time(session["created_at"]), session["session_id"], position))
        position += len(line)
    keys.sort()
    positions = [p for *_, p in keys]
    return [positions[i:i + max_sessions] for i in range(0, len(positions), max_sessions)]


def _sort_time(created_at: str) -> str:
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).astimezone(timezone.utc).isoformat(timespec="microseconds")


def read_at(spool: IO[bytes], positions: Sequence[int]) -> Iterator[ClosedSession]:
    for position in positions:
        spool.seek(position)
        yield ClosedSession.model_validate_json(spool.readline())


def write_batch(store: SessionStore, batch_id: str, opened_at: datetime,
                sessions: Iterable[ClosedSession]) -> tuple[BatchRecord, int]:
    """Open the batch (or find it), store the sessions, close it with reason ``replay``."""
    live = store.get_open_batch()
    if live is not None and live.batch_id.startswith(REPLAY_BATCH_PREFIX):
        live = None  # a replay cut short, not the batcher's
    record = store.open_batch(batch_id, opened_at)
    if record.status is BatchStatus.closed:
        return record, 0
    added = 0
    try:
        for chunk in _chunks(sessions, _WRITE_CHUNK):
            added += store.put_sessions(batch_id, chunk)
        record = store.close_batch(batch_id, utc_now(), "replay")
    finally:
        _keep_current(store, live)
    return record, added


def _keep_current(store: SessionStore, live: BatchRecord | None) -> None:
    """Opening a batch may make it the store's "open batch", the one a restarting batcher resumes
    (Cassandra keeps a pointer to the batch opened last): point the store back at the batcher's."""
    if live is not None and store.get_open_batch() is None:
        store.open_batch(live.batch_id, live.opened_at)  # idempotent; re-points at it while it is open


def spool_sessions(spool: IO[bytes], sessions: Sequence[ClosedSession]) -> None:
    # The order here is the read's; ``_parts`` puts the sessions in an order of their own.
    to_json = ClosedSession.__pydantic_serializer__.to_json
    for session in sorted(sessions, key=lambda s: (s.created_at, s.session_id)):
        spool.write(to_json(session) + b"\n")


def _chunks(items: Iterable[ClosedSession], size: int) -> Iterator[list[ClosedSession]]:
    chunk: list[ClosedSession] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
