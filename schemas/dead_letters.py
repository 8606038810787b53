"""Dead letters: an input a processor could not use, kept byte for byte with the reason.

The dead-letter message's value is the original value unchanged and its key the original key; what
went wrong travels in headers (the Kafka Connect convention), so the bytes can be re-sent as they are
once the producer is fixed.
"""

from __future__ import annotations

from pydantic import Field

from schemas.base import Contract, UtcDatetime

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
