"""Batch events: the announcement that a batch is closed and its sessions are durable."""

from __future__ import annotations

from pydantic import Field

from schemas.base import Contract, Identifier, UtcDatetime
from schemas.sessions import BatchCloseReason


class BatchClosed(Contract):
    """Published only after every session of the batch is durable in the store."""

    batch_id: Identifier
    session_count: int = Field(ge=0)
    opened_at: UtcDatetime
    closed_at: UtcDatetime
    close_reason: BatchCloseReason
    release_id: Identifier | None = Field(
        default=None, description="Set when a release command closed the batch."
    )

