"""Reading a topic from its start (or from given offsets) to its end, without joining a group.

``TopicReader`` assigns every partition of a topic, so it reads what was published before it
started and costs no consumer-group join. A partition is *at its end* when librdkafka reports
end-of-partition for it: the fetch position has reached the partition's high watermark as the
broker returned it with the fetched records (with transactions: the last stable offset, past
control records). That is the end a real Kafka defines, at the moment of reading; no silence
timeout guesses it. A ListOffsets look-up is used only as a size hint (``end_offsets``): some
Kafka-protocol brokers (tansu) answer it wrongly when a record batch holds several records, and a
reader that stopped there would stop early.

``caught_up`` turns true once every partition still read has been at its end once; a reader may
go on afterwards and follow new records (``EventReader`` does, for the CLI and the pipeline driver).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import BaseModel, ValidationError

from messaging.config import KafkaCluster, as_cluster
from messaging.topics import MessagingError, topic_partitions

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class ReadError(MessagingError):
    """The topic could not be read: a fatal client error, or its end not reached in time."""


class TopicReader:
    """``with TopicReader(cluster, topic) as reader: for records in reader.until_caught_up(60): ...``

    ``starts`` maps partitions to their first offset; partitions it leaves out are not read. Without
    it every partition is read from offset 0 (rather than OFFSET_BEGINNING, which costs a look-up per
    partition on some brokers; ``auto.offset.reset`` covers an offset 0 gone to retention)."""

    def __init__(self, cluster: KafkaCluster | str, topic: str, *, starts: Mapping[int, int] | None = None,
                 partitions: list[int] | None = None, extra_config: Mapping[str, Any] | None = None,
                 metadata_timeout_s: float = 15.0) -> None:
        self.cluster = as_cluster(cluster)
        self.topic = topic
        self._consumer = Consumer(self.cluster.reader(extra_config))
        try:
            self.partitions = partitions if partitions is not None else topic_partitions(
                self.cluster, topic, timeout_s=metadata_timeout_s, admin=self._consumer)
        except BaseException:
            self._consumer.close()
            raise
        offsets = dict(starts) if starts is not None else {p: 0 for p in self.partitions}
        self._reading = set(offsets)
        self._not_at_end = set(offsets)
        if offsets:
            self._consumer.assign([TopicPartition(topic, p, o) for p, o in sorted(offsets.items())])

    # --- where the reader stands ----------------------------------------------------------------
    @property
    def caught_up(self) -> bool:
        return not self._not_at_end

    def is_reading(self, partition: int) -> bool:
        """Whether ``partition`` is still read (not ``finish``-ed)."""
        return partition in self._reading

    def end_offsets(self, timeout_s: float = 10.0) -> dict[int, int]:
        """The broker's high watermark of each partition read, by ListOffsets: a hint for progress
        bars, never where reading stops (see the module's note); partitions that fail are left out."""
        ends = {}
        for partition in sorted(self._reading):
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=timeout_s)
            except KafkaException:
                continue
            ends[partition] = high
        return ends

    def offsets_for_time(self, timestamp_ms: int, timeout_s: float = 30.0) -> dict[int, int]:
        """The first offset stamped at or after ``timestamp_ms`` per partition; partitions with none
        are left out."""
        try:
            found = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, p, timestamp_ms) for p in self.partitions], timeout=timeout_s)
        except KafkaException as error:
            raise ReadError(f"looking up offsets by time on {self.topic}: {error.args[0].str()}") from error
        offsets = {}
        for tp in found:
            if tp.error is not None:
                raise ReadError(f"looking up offsets by time on {self.topic}[{tp.partition}]: {tp.error.str()}")
            if tp.offset >= 0:
                offsets[tp.partition] = tp.offset
        return offsets

    def seek(self, starts: Mapping[int, int]) -> None:
        """Read exactly these partitions, from these offsets (the others are no longer read)."""
        self._consumer.unassign()
        self._reading = set(starts)
        self._not_at_end = set(starts)
        if starts:
            self._consumer.assign([TopicPartition(self.topic, p, o) for p, o in sorted(starts.items())])

    def finish(self, partition: int) -> None:
        """Stop reading ``partition`` (its part of the topic is done); records already fetched of it
        are dropped."""
        if partition in self._reading:
            self._reading.discard(partition)
            self._not_at_end.discard(partition)
            self._consumer.pause([TopicPartition(self.topic, partition)])

    # --- reading --------------------------------------------------------------------------------
    def read(self, max_records: int = 500, timeout_s: float = 0.2) -> list[Message]:
        """The next records (of partitions still read), each partition in offset order."""
        records: list[Message] = []
        for message in self._consumer.consume(max_records, timeout=timeout_s):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._not_at_end.discard(message.partition())
                elif error.fatal():
                    raise ReadError(f"reading {self.topic}: {error.str()}")
                else:
                    log.warning("reading %s: %s", self.topic, error.str())
                continue
            if message.partition() in self._reading:
                records.append(message)
        return records

    def until_caught_up(self, timeout_s: float, max_records: int = 500) -> Iterator[list[Message]]:
        """Chunks of records until every partition read is at its end; ReadError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.caught_up:
            if time.monotonic() > deadline:
                raise ReadError(f"reading {self.topic} took more than {timeout_s:.0f} s; partitions not at "
                                f"their end: {sorted(self._not_at_end)}")
            records = self.read(max_records)
            if records:
                yield records

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None  # type: ignore[assignment]

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventReader(Generic[M]):
    """A topic's records parsed as ``model``, from its start, kept in ``events`` as they are read.

    Records that do not parse are counted in ``unreadable`` and skipped: the topic's own consumers
    judge (and dead-letter) them; a reader that only looks on does not."""

    def __init__(self, cluster: KafkaCluster | str, topic: str, model: type[M], **reader_options: Any) -> None:
        self.model = model
        self.events: list[M] = []
        self.unreadable = 0
        self._reader = TopicReader(cluster, topic, **reader_options)

    @property
    def topic(self) -> str:
        return self._reader.topic

    @property
    def caught_up(self) -> bool:
        return self._reader.caught_up

    def poll(self, timeout_s: float = 0.2) -> list[M]:
        """The events read now (also appended to ``events``)."""
        new: list[M] = []
        for message in self._reader.read(timeout_s=timeout_s):
            try:
                new.append(self.model.model_validate_json(message.value() or b""))
            except ValidationError:
                self.unreadable += 1
        self.events += new
        return new

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> EventReader[M]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
