"""The SDK places each session where Faust would: librdkafka's ``murmur2_random`` (what the broker
actually stored), aiokafka's DefaultPartitioner (what Faust uses) and ingest.partitioner agree on
every key."""

from __future__ import annotations

import random
import string
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from messaging.topics import ensure_topics
from ingest.partitioner import murmur2, partition_for
from ingest.producer import ClickstreamProducer, DeliveryReport
from schemas.clickstream import SessionEnd
from schemas.topics import TopicRegistry

KEYS = 2000


def _session_ids(count: int) -> list[str]:
    """Keys of every length 1..40 and of several alphabets, multi-byte UTF-8 included."""
    rng = random.Random(20261122)
    alphabets = [string.ascii_letters + string.digits + "-_", "0123456789abcdef", "äöüßéèñçøå€漢字🙂"]
    keys = {f"session-{n}" for n in range(count // 4)}
    while len(keys) < count:
        keys.add("".join(rng.choices(rng.choice(alphabets), k=rng.randint(1, 40))))
    return sorted(keys)


@pytest.mark.parametrize("partitions", [8, 5])
def test_every_key_lands_where_aiokafka_and_the_reference_place_it(kafka_bootstrap: str, partitions: int) -> None:
    registry = TopicRegistry(prefix=f"p{uuid.uuid4().hex[:8]}", clickstream_partitions=partitions)
    ensure_topics(kafka_bootstrap, registry)
    reports: list[DeliveryReport] = []
    keys = _session_ids(KEYS)

    with ClickstreamProducer(kafka_bootstrap, registry, on_delivery=reports.append) as producer:
        producer.send_many([SessionEnd(session_id=key) for key in keys])

    assert len(reports) == len(keys) and all(r.ok for r in reports)
    stored = {r.session_id: r.partition for r in reports}
    aiokafka = DefaultPartitioner()
    all_partitions = list(range(partitions))
    for key in keys:
        raw = key.encode("utf-8")
        assert stored[key] == aiokafka(raw, all_partitions, all_partitions) == partition_for(key, partitions), key
    assert set(stored.values()) == set(all_partitions)  # the comparison exercised every partition


def test_reference_murmur2_equals_aiokafkas_on_every_tail_length() -> None:
    rng = random.Random(1)
    for length in range(0, 67):
        for _ in range(30):
            data = bytes(rng.randrange(256) for _ in range(length))
            assert murmur2(data) == aiokafka_murmur2(data), data


def test_reference_murmur2_matches_the_java_clients_published_values() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2, as signed ints, in the Java client's own tests.
    java = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
            b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
            b"abc": 479470107}
    for data, signed in java.items():
        assert murmur2(data) == signed & 0xFFFFFFFF, data


def test_partition_for_accepts_text_and_bytes_alike() -> None:
    assert partition_for("session-1", 8) == partition_for(b"session-1", 8)
    with pytest.raises(ValueError):
        partition_for("session-1", 0)
