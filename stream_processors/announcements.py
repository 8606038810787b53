"""BatchClosed announcements, exactly once per batch in the store even across crashes.

The batcher announces a batch right after the store closed it (its sessions were all stored
before), and once the broker has acknowledged the BatchClosed it marks the batch announced in the
store (``SessionStore.mark_announced``: a SQLite transaction, a Cassandra LWT). A batcher taking
over announces exactly the closed batches not marked (``list_unannounced``) — no reading of the
topic, no guessing from silence. The one window left, a crash after the ack and before the mark,
sends the same record (same key, same value) again; the batches topic is compacted by batch id
and the trainer keys its task by batch id, so the repeat changes nothing.
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

