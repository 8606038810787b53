"""Dead letters: the original record, byte for byte, with what went wrong in its headers."""

from __future__ import annotations

from datetime import datetime

from schemas.base import utc_now
from schemas.dead_letters import (
    DeadLetter,
    HEADER_FAILED_AT,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
)

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
