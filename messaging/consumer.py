"""The consume loop of the services that handle one record at a time (trainer, indexer).

``CommittingConsumer`` joins a group on its topics and hands every record to ``handle``; the
record's offset is committed (synchronously) only after ``handle`` returned, so a killed process
redoes at most the record it was handling — handlers are written to be idempotent. Between polls
``between`` runs (a health check that may raise to stop the loop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message

from messaging.config import KafkaCluster, as_cluster

log = logging.getLogger(__name__)


class CommittingConsumer:
    def __init__(self, cluster: KafkaCluster | str, group_id: str, topics: Sequence[str], *,
                 session_timeout_s: float | None = None, heartbeat_interval_s: float | None = None,
                 extra_config: Mapping[str, Any] | None = None, poll_timeout_s: float = 0.2) -> None:
        self.topics = list(topics)
        self.poll_timeout_s = poll_timeout_s
        self.config = as_cluster(cluster).consumer(
            group_id, session_timeout_s=session_timeout_s, heartbeat_interval_s=heartbeat_interval_s,
            extra=extra_config)
        self._consumer: Consumer | None = None

    def open(self) -> CommittingConsumer:
        """Subscribe now (the group join starts while the caller prepares)."""
        if self._consumer is None:
            self._consumer = Consumer(self.config)
            self._consumer.subscribe(self.topics)
        return self

    def run(self, handle: Callable[[Message], None], stop: threading.Event, *,
            between: Callable[[], None] | None = None) -> None:
        """Poll, handle, commit, until ``stop`` is set; closes the consumer (leaving the group) on the way out."""
        consumer = self.open()._consumer
        assert consumer is not None
        try:
            while not stop.is_set():
                if between is not None:
                    between()
                message = consumer.poll(self.poll_timeout_s)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error on %s: %s", ", ".join(self.topics), error)
                    continue
                handle(message)
                consumer.commit(message=message, asynchronous=False)
        finally:
            self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
