"""Dead letters: an input a processor could not use, kept byte for byte with the reason.

The dead-letter message's value is the original value unchanged and its key the original key; what
went wrong travels in headers (the Kafka Connect convention), so the bytes can be re-sent as they are
once the producer is fixed.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.base import Contract, UtcDatetime, utc_now

HEADER_REASON = "es-dlq-reason"
HEADER_SOURCE_TOPIC = "es-dlq-source-topic"
HEADER_SOURCE_PARTITION = "es-dlq-source-partition"
HEADER_SOURCE_OFFSET = "es-dlq-source-offset"
HEADER_FAILED_AT = "es-dlq-failed-at"


class DeadLetter(Contract):
    """A dead-letter message read back: the headers above plus the original key and value."""

    reason: str
    source_topic: str
    source_partition: int = Field(ge=-1)
    source_offset: int = Field(ge=-1)
    failed_at: UtcDatetime
    key: bytes | None
    value: bytes | None


# Writing and reading the headers lives beside their names, so every producer of dead letters
# (stream workers, trainer) and every reader shares one encoding.

# A reason can quote user input (a pydantic message names the bad value); headers are not the
# place for megabytes.
MAX_REASON_CHARS = 2000


def dead_letter_headers(
    reason: str, source_topic: str, source_partition: int, source_offset: int, failed_at: datetime | None = None
) -> list[tuple[str, bytes]]:
    return [
        (HEADER_REASON, reason[:MAX_REASON_CHARS].encode("utf-8")),
        (HEADER_SOURCE_TOPIC, source_topic.encode("utf-8")),
        (HEADER_SOURCE_PARTITION, str(source_partition).encode()),
        (HEADER_SOURCE_OFFSET, str(source_offset).encode()),
        (HEADER_FAILED_AT, (failed_at or utc_now()).isoformat().encode()),
    ]


def read_dead_letter(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
) -> DeadLetter:
    """A dead-letter record as the contract describes it (for tools and tests reading the topic)."""
    found = {name: raw.decode("utf-8", "replace") for name, raw in headers or []}
    return DeadLetter(
        reason=found[HEADER_REASON],
        source_topic=found[HEADER_SOURCE_TOPIC],
        source_partition=int(found[HEADER_SOURCE_PARTITION]),
        source_offset=int(found[HEADER_SOURCE_OFFSET]),
        failed_at=found[HEADER_FAILED_AT],
        key=key,
        value=value,
    )
