"""BatchClosed announcements, exactly once per batch even across crashes.

The batcher announces a batch right after the store closed it (its sessions were all stored
before). A crash between the close and the announcement would lose it, so before a batcher starts
work it reads the batches topic from the beginning and announces the closed batches of the store
that are not on it yet. The topic is small (one record per batch); it is read until the broker has
nothing more for a short while, not up to a high watermark, which some brokers report wrongly.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas.batches import BatchClosed
from schemas.sessions import BatchRecord

log = logging.getLogger(__name__)


def batch_closed(record: BatchRecord) -> BatchClosed:
    assert record.closed_at is not None and record.close_reason is not None
    return BatchClosed(
        batch_id=record.batch_id, session_count=record.session_count, opened_at=record.opened_at,
        closed_at=record.closed_at, close_reason=record.close_reason, release_id=record.release_id,
    )


def announced_batch_ids(
    bootstrap: str, topic: str, partitions: int = 1, *, quiet_s: float = 1.5, timeout_s: float = 60.0
) -> set[str]:
    """Keys (batch ids) of every record on ``topic``, read from the start with assigned partitions
    (no group join) until nothing arrives for ``quiet_s``."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"batch-announcements-{uuid.uuid4().hex[:8]}",  # never joined; assign() needs a group id
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",  # offset 0 may be gone to retention: start at the oldest kept
    })
    found: set[str] = set()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < min(deadline, quiet_until):
            messages = consumer.consume(1000, timeout=0.2)
            for message in messages:
                if message.error() is not None:
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("reading %s: %s", topic, message.error())
                    continue
                if message.key():
                    found.add(message.key().decode("utf-8", "replace"))
            if messages:
                quiet_until = time.monotonic() + quiet_s
        if time.monotonic() >= deadline:
            log.warning("reading %s took over %.0f s; announcements found so far: %d", topic, timeout_s, len(found))
    finally:
        consumer.close()
    return found


def unannounced(closed: list[BatchRecord], announced: set[str]) -> list[BatchRecord]:
    """Closed batches missing from the topic, oldest first (the order they were closed in)."""
    missing = [b for b in closed if b.batch_id not in announced]
    return sorted(missing, key=lambda b: (b.closed_at, b.batch_id))
