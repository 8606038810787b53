"""Everything the trainer writes to Kafka: task status, model-ready events, release commands and
dead letters of the batches topic.

Every send waits for the broker's acknowledgement and is retried; one that is still not
acknowledged raises ``PublishFailed``, so no caller goes on as if it had been delivered (a task
whose ModelReady was never acknowledged ends in ``error``, not "better model").
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException, Producer

from observability.tasks import observe_status
from schemas.faults import crash_point
from schemas.models import ModelReady
from schemas.tasks import ReleaseBatch, TaskStatus
from schemas.topics import TopicRegistry

log = logging.getLogger(__name__)


class PublishFailed(RuntimeError):
    """The broker did not acknowledge a trainer event after every attempt."""


class TaskEventPublisher:
    def __init__(self, bootstrap: str, topics: TopicRegistry, extra_config: dict | None = None,
                 *, attempts: int = 3):
        self.topics = topics
        self.attempts = attempts
        config = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "message.max.bytes": topics.max_message_bytes,
            # One attempt's bound; librdkafka retries inside it, this class retries attempts times.
            "message.timeout.ms": 30_000,
            **(extra_config or {}),
        }
        self._timeout_s = config["message.timeout.ms"] / 1000 + 5
        self._producer = Producer(config)

    def status(self, status: TaskStatus) -> None:
        self._deliver(self.topics.task_status.name, status.task_id, status.model_dump_json().encode(),
                      f"status {status.status.value} of task {status.task_id}")
        observe_status(status)  # the trainer's task metrics

    def model_ready(self, event: ModelReady) -> None:
        crash_point("trainer.before_model_ready")
        self._deliver(self.topics.model_ready.name, event.task_id, event.model_dump_json().encode(),
                      f"ModelReady of task {event.task_id}")

    def release(self, command: ReleaseBatch) -> None:
        self._deliver(self.topics.commands.name, command.release_id, command.model_dump_json().encode(),
                      f"release {command.release_id}")

    def dead_letter(self, topic: str, key: bytes | None, value: bytes | None,
                    headers: list[tuple[str, bytes]]) -> None:
        self._deliver(topic, key, value, f"dead letter on {topic}", headers=headers)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise PublishFailed(f"{remaining} trainer event(s) not delivered within {timeout:.0f} s")

    def _deliver(self, topic: str, key: str | bytes | None, value: bytes | None, what: str,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        raw_key = key.encode() if isinstance(key, str) else key
        error: object = None
        for attempt in range(1, self.attempts + 1):
            outcome: list[KafkaError | None] = []
            try:
                self._producer.produce(topic, key=raw_key, value=value, headers=headers or [],
                                       on_delivery=lambda err, _msg: outcome.append(err))
            except (BufferError, KafkaException) as refused:
                error = refused
            else:
                self._producer.flush(self._timeout_s)
                if outcome and outcome[0] is None:
                    return
                error = outcome[0] if outcome else f"no acknowledgement within {self._timeout_s:.0f} s"
            log.warning("%s not delivered (attempt %d of %d): %s", what, attempt, self.attempts, error)
        raise PublishFailed(f"{what} was not acknowledged by the broker after {self.attempts} attempt(s): {error}")
