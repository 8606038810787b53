"""Kafka plumbing every process of the system uses, written once: client configurations built from
settings (bootstrap servers and the ``ES_KAFKA_*`` security settings, ``config``), topic creation
and checks (``topics``), a reader of a topic from its start to its end offsets without a group
join (``reader``), a producer whose sends are confirmed or raise (``producer``) and the
handle-then-commit consume loop of the trainer and the indexer (``consumer``). It sits at the layer
of ``session_store``: it depends on ``schemas`` only, and every other package may use it.
"""

from messaging.config import KAFKA_PARTITIONER, KafkaCluster, as_cluster, faust_broker_options
from messaging.consumer import CommittingConsumer
from messaging.producer import ConfirmedProducer, NotDelivered
from messaging.reader import EventReader, ReadError, TopicReader
from messaging.topics import (
    BrokerUnavailable,
    MessagingError,
    TopicMismatchError,
    TopicMissing,
    ensure_topics,
    topic_partitions,
)

__all__ = [
    "KAFKA_PARTITIONER",
    "BrokerUnavailable",
    "CommittingConsumer",
    "ConfirmedProducer",
    "EventReader",
    "KafkaCluster",
    "MessagingError",
    "NotDelivered",
    "ReadError",
    "TopicMismatchError",
    "TopicMissing",
    "TopicReader",
    "as_cluster",
    "ensure_topics",
    "faust_broker_options",
    "topic_partitions",
]
