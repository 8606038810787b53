"""BatchClosed announcements, exactly once per batch in the store even across crashes.

The batcher announces a batch right after the store closed it (its sessions were all stored
before), and once the broker has acknowledged the BatchClosed it marks the batch announced in the
store (``SessionStore.mark_announced``: a SQLite transaction, a Cassandra LWT). A batcher taking
over announces exactly the closed batches not marked (``list_unannounced``) — no guessing from
silence. The one window left, a crash after the broker took the record and
before the mark, is closed at the takeover: when some closed batches are not marked, the new batcher
reads the batches topic to its end (compacted by batch id: one record per batch) and marks those it
finds instead of sending them again. The trainer keys its task by batch id as well.
"""

from __future__ import annotations

import logging

from schemas.batches import BatchClosed
from schemas.sessions import BatchRecord

log = logging.getLogger(__name__)


def batch_closed(record: BatchRecord) -> BatchClosed:
    assert record.closed_at is not None and record.close_reason is not None
    return BatchClosed(
        batch_id=record.batch_id, session_count=record.session_count, opened_at=record.opened_at,
        closed_at=record.closed_at, close_reason=record.close_reason, release_id=record.release_id,
    )

