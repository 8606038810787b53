"""The producer SDK: validate clickstream events against their contracts and send them to Kafka,
keyed and partitioned the way the stream processors expect."""

from ingest.partitioner import partition_for
from ingest.producer import (
    ClickstreamProducer,
    DeliveryError,
    DeliveryReport,
    ProducerFatalError,
    validate_event,
)

__all__ = [
    "ClickstreamProducer",
    "DeliveryError",
    "DeliveryReport",
    "ProducerFatalError",
    "partition_for",
    "validate_event",
]
