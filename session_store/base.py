"""The session store interface: closed sessions grouped into batches, and each batch's state.

One writer (the batcher) adds sessions and changes batch state; many readers (trainer, replay, CLI)
read. Every write is idempotent so that at-least-once delivery upstream changes nothing:

- a session is stored at most once, in the first batch it was written to;
- closing a batch twice (or with the same ``release_id``) returns the same closed record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import datetime

from schemas.sessions import (
    BatchCloseReason,
    BatchRecord,
    BatchStatus,
    ClosedSession,
    OpenSession,
    StoredSession,
)


class BatchNotFound(LookupError):
    pass


class BatchNotOpen(RuntimeError):
    """A session was written to, or a close attempted on, a batch that is already closed."""


class SessionStore(ABC):
    # --- sessions ----------------------------------------------------------------------------
    @abstractmethod
    def put_sessions(self, batch_id: str, sessions: Iterable[ClosedSession]) -> int:
        """Store sessions in the open batch ``batch_id``; return how many were new.

        Sessions already stored (in this or any batch) are left exactly as they are."""

    @abstractmethod
    def get_session(self, session_id: str) -> StoredSession | None: ...

    @abstractmethod
    def iter_sessions(self, batch_id: str, page_size: int = 500) -> Iterator[StoredSession]:
        """All sessions of a batch, fetched ``page_size`` at a time (memory does not grow with the
        batch), in a stable order."""

    @abstractmethod
    def count_sessions(self, batch_id: str) -> int: ...

    # --- batches ------------------------------------------------------------------------------
    @abstractmethod
    def open_batch(self, batch_id: str, opened_at: datetime) -> BatchRecord:
        """Create the batch in state ``open`` (idempotent: an existing batch is returned unchanged)."""

    @abstractmethod
    def get_open_batch(self) -> BatchRecord | None: ...

    @abstractmethod
    def close_batch(
        self, batch_id: str, closed_at: datetime, reason: BatchCloseReason, release_id: str | None = None
    ) -> BatchRecord:
        """Close an open batch exactly once; closing it again returns the stored closed record.

        Raises BatchNotFound for an unknown batch."""

    @abstractmethod
    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    @abstractmethod
    def find_batch_by_release(self, release_id: str) -> BatchRecord | None: ...

    @abstractmethod
    def list_batches(self, status: BatchStatus | None = None, limit: int = 100) -> list[BatchRecord]:
        """Newest first."""

    # --- open sessions: the sessionizer's working state ----------------------------------------
    @abstractmethod
    def load_open_sessions(self, session_ids: Iterable[str]) -> dict[str, OpenSession]:
        """The stored state (open or tombstone) of those sessions that have one."""

    @abstractmethod
    def save_open_sessions(self, sessions: Iterable[OpenSession]) -> None:
        """Upsert session states in one write (a tombstone is a state with ``closed_at`` set)."""

    @abstractmethod
    def iter_idle_open_sessions(self, partitions: Iterable[int], last_seen_before: datetime) -> Iterator[OpenSession]:
        """Open (not closed) sessions of those partitions whose last event was seen before the time."""

    @abstractmethod
    def purge_tombstones(self, closed_before: datetime) -> int:
        """Forget closed-session states older than the time; return how many."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
