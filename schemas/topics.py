"""The topic registry: every Kafka topic the system uses, its key and partition count, in one place.

Names are ``<prefix>.<name>``; the prefix lets several installations share one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.base import Contract
from schemas.batches import BatchClosed
from schemas.clickstream import CLICKSTREAM_EVENT_TYPES
from schemas.index import IndexReady, ItemUpsert
from schemas.models import ModelReady
from schemas.tasks import TaskStatus


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # which field of the value is the message key
    partitions: int
    value: str  # contract (or description) of the value
    description: str
    compacted: bool = False


@dataclass(frozen=True)
class TopicRegistry:
    prefix: str = "es"
    clickstream_partitions: int = 8
    # Every topic is created with this ``max.message.bytes`` and every producer of the system uses
    # it as ``message.max.bytes``: a record one side accepts, the other does too (stock Kafka's
    # default is ~1 MB, less than a big closed session).
    max_message_bytes: int = 4 << 20

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def clickstream(self) -> TopicSpec:
        return TopicSpec(
            self._name("clickstream.events"), "session_id", self.clickstream_partitions,
            " | ".join(event.__name__ for event in CLICKSTREAM_EVENT_TYPES),
            "Raw clickstream from search products (the producer SDK writes here).",
        )

    @property
    def clickstream_dlq(self) -> TopicSpec:
        return TopicSpec(
            self._name("clickstream.dlq"), "original key", 1, "original bytes; reason in headers",
            "Raw events the sessionizer refused, with the reason.",
        )

    @property
    def clickstream_late(self) -> TopicSpec:
        return TopicSpec(
            self._name("clickstream.late"), "session_id", self.clickstream_partitions,
            "Interaction | MarkIrrelevant | SessionEnd",
            "Events for sessions already closed and stored; counted, never merged into a released batch.",
        )

    @property
    def sessions(self) -> TopicSpec:
        return TopicSpec(
            self._name("sessions.closed"), "batch key", 1, "StoredSession",
            "Closed sessions on their way from the sessionizer to the batcher (internal).",
        )

    @property
    def commands(self) -> TopicSpec:
        return TopicSpec(
            self._name("tasks.commands"), "task_id / idempotency_key / release_id", 1, "TaskCommand",
            "Operators' commands: create, cancel, restart, replay_batch, release_batch.",
        )

    @property
    def commands_dlq(self) -> TopicSpec:
        return TopicSpec(
            self._name("tasks.commands.dlq"), "original key", 1, "original bytes; reason in headers",
            "Commands that could not be parsed, with the reason.",
        )

    @property
    def batches(self) -> TopicSpec:
        return TopicSpec(
            self._name("batches.closed"), "batch_id", 1, BatchClosed.__name__,
            "A batch is closed and every session of it is durable in the store.",
            compacted=True,  # one record per batch id survives retention: a re-announce replaces, never adds
        )

    @property
    def task_status(self) -> TopicSpec:
        return TopicSpec(
            self._name("tasks.status"), "task_id", 1, TaskStatus.__name__,
            "Every change of every task, with progress.",
        )

    @property
    def model_ready(self) -> TopicSpec:
        return TopicSpec(
            self._name("models.ready"), "task_id", 1, ModelReady.__name__,
            "A fine-tuned model better than its starting point is stored and loadable.",
        )

    @property
    def index_ready(self) -> TopicSpec:
        return TopicSpec(
            self._name("index.ready"), "index_name", 1, IndexReady.__name__,
            "A refreshed index version is complete and served (model URI, version, items, seconds).",
        )

    @property
    def item_upserts(self) -> TopicSpec:
        return TopicSpec(
            self._name("items.upserts"), "object_id", 1, ItemUpsert.__name__,
            "Items added, changed or deleted between refreshes; the indexer embeds them into the served version.",
        )

    @property
    def batches_dlq(self) -> TopicSpec:
        return TopicSpec(
            self._name("batches.closed.dlq"), "original key", 1, "original bytes; reason in headers",
            "Records on the batches topic the trainer could not read, with the reason.",
        )

    def all(self) -> list[TopicSpec]:
        return [
            self.clickstream, self.clickstream_dlq, self.clickstream_late, self.sessions,
            self.commands, self.commands_dlq, self.batches, self.task_status, self.model_ready,
            self.index_ready, self.item_upserts, self.batches_dlq,
        ]


def contract_types() -> list[type[Contract]]:
    """Every contract that crosses a topic or is stored, for schema export."""
    from schemas.batches import BatchClosed as _BatchClosed
    from schemas.dead_letters import DeadLetter
    from schemas.sessions import BatchRecord, StoredSession
    from schemas.tasks import TASK_COMMAND_TYPES

    return [
        *CLICKSTREAM_EVENT_TYPES, *TASK_COMMAND_TYPES, TaskStatus, _BatchClosed, ModelReady,
        StoredSession, BatchRecord, DeadLetter, IndexReady, ItemUpsert,
    ]
