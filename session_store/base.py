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


class BatchNotClosed(RuntimeError):
    """A batch still open was marked announced: only a closed batch has a BatchClosed."""


class StaleBatcher(RuntimeError):
    """A batcher whose epoch is no longer the newest wrote: another batcher took over meanwhile."""


class ReleaseConflict(ValueError):
    """A ``release_id`` that already closed one batch was given to close another.

    A release id names exactly one close; a retry of that release must look it up with
    ``find_batch_by_release`` instead of closing whatever batch is open now."""


class StoreNotInitialised(RuntimeError):
    """The store's schema is missing or older than this code: run ``embedding-studio store init``."""


class SessionStore(ABC):
    # --- schema (not abstract: a store without a schema to manage keeps the default) ---------------
    def init_schema(self) -> int:
        """Create or migrate the store's tables; safe to run again and again. Returns the schema
        version now in place."""
        return 0

    # --- sessions ----------------------------------------------------------------------------
    @abstractmethod
    def put_sessions(self, batch_id: str, sessions: Iterable[ClosedSession], *, epoch: int | None = None) -> int:
        """Store sessions in the open batch ``batch_id``; return how many were new.

        Sessions already stored (in this or any batch) are left exactly as they are. Raises
        BatchNotFound for an unknown batch and BatchNotOpen for a closed one. With ``epoch`` (a
        batcher's, from ``claim_batcher``), raises StaleBatcher and writes nothing once a newer
        epoch was claimed."""

    # --- the batcher's epoch ----------------------------------------------------------------------
    @abstractmethod
    def claim_batcher(self) -> int:
        """A new batcher epoch, greater than every one before (SQLite: a transaction; Cassandra:
        an LWT). Writes carrying an older epoch are refused from now on."""

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
        """Create the batch in state ``open`` (idempotent: an existing batch is returned unchanged).

        An open record's ``session_count`` is 0; use ``count_sessions`` for a live count."""

    @abstractmethod
    def get_open_batch(self) -> BatchRecord | None:
        """The batch being collected. The batcher keeps one batch open at a time; should several
        be open, which one comes back is store-specific (SQLite: the newest ``opened_at``;
        Cassandra: the most recently opened one, and only while it is still open)."""

    @abstractmethod
    def close_batch(
        self, batch_id: str, closed_at: datetime, reason: BatchCloseReason, release_id: str | None = None,
        *, epoch: int | None = None,
    ) -> BatchRecord:
        """Close an open batch exactly once (refused with StaleBatcher for an ``epoch`` no longer newest); closing it again returns the stored closed record.

        The closed record's ``session_count`` is the number of sessions stored in the batch.

        Raises BatchNotFound for an unknown batch, and ReleaseConflict when ``release_id`` already
        closed a different batch."""

    @abstractmethod
    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    @abstractmethod
    def find_batch_by_release(self, release_id: str) -> BatchRecord | None: ...

    @abstractmethod
    def list_batches(self, status: BatchStatus | None = None, limit: int = 100) -> list[BatchRecord]:
        """Newest first."""

    # --- announcements: whether a closed batch's BatchClosed was acknowledged -------------------
    @abstractmethod
    def mark_announced(self, batch_id: str, announced_at: datetime) -> bool:
        """Record that the broker acknowledged this closed batch's BatchClosed (SQLite: one
        transaction; Cassandra: an LWT on the batch row). True if this call marked it, False if it
        was marked before. Raises BatchNotFound for an unknown batch, BatchNotClosed for a batch still
        open."""

    @abstractmethod
    def list_unannounced(self, limit: int = 1000) -> list[BatchRecord]:
        """Closed batches not marked announced, oldest close first: what a batcher taking over
        must announce (exactly these, whatever the batches topic holds)."""

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
