"""Creating the registry's topics on a cluster, before anything produces to them.

Every topic gets ``max.message.bytes`` from the registry (the number every producer of the system
uses as ``message.max.bytes``), and compacted topics their cleanup policy.

Brokers that auto-create topics (tansu always does, with 4 partitions) would otherwise give the
clickstream whatever partition count the first producer happened to trigger, and the key → partition
mapping the stream processors rely on would differ from the registry's.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.topics import TopicRegistry, TopicSpec

log = logging.getLogger(__name__)


class TopicMismatchError(RuntimeError):
    """A topic exists with another partition count than the registry says: keys would move."""


def ensure_topics(
    bootstrap: str, registry: TopicRegistry, replication_factor: int = 1, *, timeout_s: float = 15.0
) -> dict[str, int]:
    """Create every topic of ``registry`` that is missing; return ``{name: partitions}``.

    Idempotent: topics that already exist are kept, but one whose partition count differs from the
    registry raises TopicMismatchError (adding partitions silently re-routes keys, so it is an
    operator's decision, never a side effect of start-up).
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = registry.all()
    futures = admin.create_topics(
        [_new_topic(spec, replication_factor, registry.max_message_bytes) for spec in specs],
        operation_timeout=timeout_s, request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    if created:
        log.info("created topics %s", ", ".join(sorted(created)))
    return _check_partitions(admin, specs, timeout_s)


def _new_topic(spec: TopicSpec, replication_factor: int, max_message_bytes: int) -> NewTopic:
    # Explicit, never the broker's default: the producers' message.max.bytes is the same number,
    # so a record one side accepts the other accepts too (stock Kafka defaults to ~1 MB).
    config = {"max.message.bytes": str(max_message_bytes)}
    if spec.compacted:
        config["cleanup.policy"] = "compact"
    return NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=replication_factor, config=config)


def _check_partitions(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout_s)
    actual: dict[str, int] = {}
    problems = []
    for spec in specs:
        topic = metadata.topics.get(spec.name)
        count = len(topic.partitions) if topic is not None and topic.error is None else 0
        actual[spec.name] = count
        if count != spec.partitions:
            problems.append(f"{spec.name}: {count} partitions on the cluster, {spec.partitions} in the registry")
    if problems:
        raise TopicMismatchError("; ".join(problems))
    return actual
