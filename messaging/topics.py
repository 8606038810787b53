"""Topics on a cluster: creating the registry's before anything produces to them, and checking
that one exists before a tool sends to it.

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

from messaging.config import KafkaCluster, as_cluster
from schemas.topics import TopicRegistry, TopicSpec

log = logging.getLogger(__name__)


class MessagingError(RuntimeError):
    """Kafka could not be used as asked; the message says what and where."""


class BrokerUnavailable(MessagingError):
    """No broker of the cluster answered."""


class TopicMissing(MessagingError):
    """The topic does not exist. Sending to it anyway would make brokers that auto-create topics
    create it with their own partition count instead of the registry's."""


class TopicMismatchError(MessagingError):
    """A topic exists with another partition count than the registry says: keys would move."""


def topic_partitions(cluster: KafkaCluster | str, topic: str, *, timeout_s: float = 10.0,
                     admin: AdminClient | None = None) -> list[int]:
    """The partitions of ``topic``; BrokerUnavailable or TopicMissing otherwise."""
    cluster = as_cluster(cluster)
    admin = admin or AdminClient(cluster.admin())
    try:
        metadata = admin.list_topics(timeout=timeout_s)  # every topic: asking for one may auto-create it
    except KafkaException as error:
        raise BrokerUnavailable(f"no answer from the broker at {cluster.bootstrap}: {error.args[0].str()}") from error
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise TopicMissing(f"topic {topic} does not exist on {cluster.bootstrap}; start the system first "
                           "(or check ES_TOPIC_PREFIX)")
    return sorted(described.partitions)


def ensure_topics(
    cluster: KafkaCluster | str, registry: TopicRegistry, replication_factor: int = 1, *, timeout_s: float = 15.0
) -> dict[str, int]:
    """Create every topic of ``registry`` that is missing; return ``{name: partitions}``.

    Idempotent: topics that already exist are kept, but one whose partition count differs from the
    registry raises TopicMismatchError (adding partitions silently re-routes keys, so it is an
    operator's decision, never a side effect of start-up).
    """
    admin = AdminClient(as_cluster(cluster).admin())
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
