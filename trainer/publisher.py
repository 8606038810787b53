"""Everything the trainer writes to Kafka: task status, model-ready events, release commands."""

from __future__ import annotations

import logging

from confluent_kafka import Producer

from schemas.models import ModelReady
from schemas.tasks import ReleaseBatch, TaskStatus
from schemas.topics import TopicRegistry

log = logging.getLogger(__name__)


class TaskEventPublisher:
    def __init__(self, bootstrap: str, topics: TopicRegistry, extra_config: dict | None = None):
        self.topics = topics
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "message.max.bytes": topics.max_message_bytes,
            **(extra_config or {}),
        })

    def status(self, status: TaskStatus) -> None:
        self._send(self.topics.task_status.name, status.task_id, status.model_dump_json())

    def model_ready(self, event: ModelReady) -> None:
        self._send(self.topics.model_ready.name, event.task_id, event.model_dump_json())
        self.flush()

    def release(self, command: ReleaseBatch) -> None:
        self._send(self.topics.commands.name, command.release_id, command.model_dump_json())
        self.flush()

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise RuntimeError(f"{remaining} trainer event(s) not delivered within {timeout:.0f} s")

    def _send(self, topic: str, key: str, value: str) -> None:
        self._producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=_report)
        self._producer.poll(0)


def _report(error, message) -> None:
    if error is not None:
        log.error("delivery to %s failed: %s", message.topic(), error)
