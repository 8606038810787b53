"""Everything the trainer writes to Kafka: task status, model-ready events, release commands and
dead letters of the batches topic.

Every send goes through ``messaging.ConfirmedProducer``: it waits for the broker's acknowledgement
and is retried; one that is still not acknowledged raises ``PublishFailed``, so no caller goes on
as if it had been delivered (a task whose ModelReady was never acknowledged ends in ``error``, not
"better model").
"""

from __future__ import annotations

from messaging import ConfirmedProducer, KafkaCluster, NotDelivered
from observability.tasks import observe_status
from schemas.faults import crash_point
from schemas.models import ModelReady
from schemas.tasks import ReleaseBatch, TaskStatus
from schemas.topics import TopicRegistry

PublishFailed = NotDelivered
"""The broker did not acknowledge a trainer event after every attempt."""


class TaskEventPublisher:
    def __init__(self, cluster: KafkaCluster | str, topics: TopicRegistry, extra_config: dict | None = None,
                 *, attempts: int = 3):
        self.topics = topics
        self._producer = ConfirmedProducer(cluster, max_message_bytes=topics.max_message_bytes,
                                           client_id="embedding-studio-trainer", attempts=attempts,
                                           extra_config=extra_config)

    def status(self, status: TaskStatus) -> None:
        self._producer.send(self.topics.task_status.name, status.task_id, status.model_dump_json().encode(),
                            what=f"status {status.status.value} of task {status.task_id}")
        observe_status(status)  # the trainer's task metrics

    def model_ready(self, event: ModelReady) -> None:
        crash_point("trainer.before_model_ready")
        self._producer.send(self.topics.model_ready.name, event.task_id, event.model_dump_json().encode(),
                            what=f"ModelReady of task {event.task_id}")

    def release(self, command: ReleaseBatch) -> None:
        self._producer.send(self.topics.commands.name, command.release_id, command.model_dump_json().encode(),
                            what=f"release {command.release_id}")

    def dead_letter(self, topic: str, key: bytes | None, value: bytes | None,
                    headers: list[tuple[str, bytes]]) -> None:
        self._producer.send(topic, key, value, what=f"dead letter on {topic}", headers=headers)

    def flush(self, timeout: float = 30.0) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        """Release the Kafka client with the trainer: left to the garbage collector it outlived the broker
        of an embedded system and logged refused connections after everything had stopped."""
        self._producer.close()

    def __enter__(self) -> TaskEventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
