"""Stored records: a closed session as the store keeps it, and a batch's state.

A stored session is immutable once written: late events never change it (they are counted and
routed to the late topic instead), so a batch read twice gives the same training data.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import Contract, Part, Identifier, Metadata, UtcDatetime
from schemas.clickstream import SearchResult, SearchSession

SessionCloseReason = Literal["end", "gap", "max_length"]


class SessionEvent(Part):
    """An interaction as kept inside a stored session (deduplicated by ``event_id``)."""

    event_id: Identifier
    object_id: Identifier
    event_type: str = "click"
    created_at: UtcDatetime
    meta: Metadata


class ClosedSession(Contract):
    """A session the sessionizer has closed: the search plus its deduplicated events."""

    session_id: Identifier
    search_query: str
    search_meta: Metadata
    search_results: list[SearchResult]
    user_id: Identifier | None = None
    created_at: UtcDatetime
    events: list[SessionEvent] = Field(default_factory=list)
    is_irrelevant: bool = False
    closed_at: UtcDatetime
    close_reason: SessionCloseReason


class StoredSession(ClosedSession):
    """A closed session as stored, in exactly one batch."""

    batch_id: Identifier


class BatchStatus(StrEnum):
    open = "open"
    closed = "closed"


BatchCloseReason = Literal["size", "age", "release", "replay"]
"""``replay``: built by ``embedding-studio replay --from-time`` from raw events, outside the stream worker."""


class BatchRecord(Contract):
    batch_id: Identifier
    status: BatchStatus
    opened_at: UtcDatetime
    closed_at: UtcDatetime | None = None
    session_count: int = Field(default=0, ge=0)
    close_reason: BatchCloseReason | None = None
    release_id: Identifier | None = None


class OpenSession(Contract):
    """The sessionizer's working state for one session, kept in the store between event batches.

    Once closed it stays as a tombstone (``closed_at`` set) for a while, so that events arriving
    after the close are recognised as late instead of starting a new session.
    """

    session_id: Identifier
    partition: int = Field(ge=0, description="Source partition: a worker scans only partitions it owns.")
    search: SearchSession | None = None
    events: list[SessionEvent] = Field(default_factory=list)
    is_irrelevant: bool = False
    first_event_at: UtcDatetime
    last_event_at: UtcDatetime
    last_seen_at: UtcDatetime = Field(description="Wall-clock time of the last event: drives idle close.")
    closed_at: UtcDatetime | None = None
    late_events: int = Field(default=0, ge=0)
    ended_at: UtcDatetime | None = Field(
        default=None, description="A SessionEnd came before the search: the session closes when the search arrives."
    )
    applied_offset: int = Field(
        default=-1, ge=-1,
        description="Source offset of the last raw event applied: a replay at or below it is skipped, not re-applied.",
    )
