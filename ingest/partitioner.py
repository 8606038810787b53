"""Which partition a key lands on: the Java client's default partitioner, in pure Python.

Faust (through aiokafka) places keyed records with ``(murmur2(key) & 0x7fffffff) % partitions``,
the rule of Kafka's Java client. Every producer that writes a topic Faust joins or co-partitions
with must place keys the same way, or one session's events would be split across workers.
librdkafka's ``murmur2_random`` partitioner implements this rule for non-null keys; the tests prove
the three agree. This module is the reference the producer and the tests check against.
"""

from __future__ import annotations

from messaging.config import KAFKA_PARTITIONER  # noqa: F401 - librdkafka's name for this rule, defined with the client configs

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 (32 bit, seed 0x9747b28c) as Kafka's ``Utils.murmur2``, as an unsigned int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    tail = data[whole:]
    # The tail bytes are folded in from the last one down, then mixed once (the C switch fall-through).
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


def partition_for(key: bytes | str, partitions: int) -> int:
    """The partition a keyed record lands on in a topic of ``partitions`` partitions."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    raw = key.encode("utf-8") if isinstance(key, str) else key
    # Java masks the sign bit rather than taking abs(), so that Integer.MIN_VALUE maps to 0 too.
    return (murmur2(raw) & 0x7FFFFFFF) % partitions
