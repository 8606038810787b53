"""Stored records: a closed session as the store keeps it, and a batch's state.

A stored session is immutable once written: late events never change it (they are counted and
routed to the late topic instead), so a batch read twice gives the same training data.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import Contract, Part, Identifier, Metadata, UtcDatetime
from schemas.clickstream import SearchResult

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


BatchCloseReason = Literal["size", "age", "release"]


class BatchRecord(Contract):
    batch_id: Identifier
    status: BatchStatus
    opened_at: UtcDatetime
    closed_at: UtcDatetime | None = None
    session_count: int = Field(default=0, ge=0)
    close_reason: BatchCloseReason | None = None
    release_id: Identifier | None = None
