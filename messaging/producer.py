"""A producer whose sends are confirmed or raise.

``ConfirmedProducer.send`` returns only once the broker has acknowledged the record; a record that
is still not acknowledged after ``attempts`` tries raises ``NotDelivered``, so no caller goes on as
if it had been delivered. ``send_all`` does the same for several records at once (one wait for all
of them). The clickstream SDK (``ingest.producer``) is the one producer that does not wait per
record: it reports deliveries through callbacks at its own pace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from messaging.config import KafkaCluster, as_cluster
from messaging.topics import MessagingError

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Record = tuple[str, "str | bytes | None", "bytes | None"]
"""(topic, key, value)"""


class NotDelivered(MessagingError):
    """The broker did not acknowledge a record after every attempt."""


def _raw(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class ConfirmedProducer:
    def __init__(self, cluster: KafkaCluster | str, *, max_message_bytes: int, client_id: str | None = None,
                 attempts: int = 3, message_timeout_s: float = 30.0, extra_config: Mapping[str, Any] | None = None):
        # One attempt's bound; librdkafka retries inside it, ``attempts`` times over.
        config = as_cluster(cluster).producer(
            max_message_bytes=max_message_bytes, client_id=client_id,
            extra={"message.timeout.ms": int(message_timeout_s * 1000), **(extra_config or {})},
        )
        self.attempts = attempts
        self._timeout_s = config["message.timeout.ms"] / 1000 + 5
        self._producer: Producer | None = Producer(config)

    def send(self, topic: str, key: str | bytes | None, value: bytes | None, *, what: str | None = None,
             headers: Headers | None = None) -> None:
        """Deliver one record or raise NotDelivered (``what`` names it in logs and the error)."""
        what = what or f"record for {topic}"
        error: object = None
        for attempt in range(1, self.attempts + 1):
            outcome: list[KafkaError | None] = []
            try:
                self._live().produce(topic, key=_raw(key), value=value, headers=headers or [],
                                     on_delivery=lambda err, _msg: outcome.append(err))
            except (BufferError, KafkaException) as refused:
                error = refused
            else:
                self._live().flush(self._timeout_s)
                if outcome and outcome[0] is None:
                    return
                error = outcome[0] if outcome else f"no acknowledgement within {self._timeout_s:.0f} s"
            log.warning("%s not delivered (attempt %d of %d): %s", what, attempt, self.attempts, error)
        raise NotDelivered(f"{what} was not acknowledged by the broker after {self.attempts} attempt(s): {error}")

    def send_all(self, records: Iterable[Record]) -> None:
        """Deliver every record (in order, per partition) or raise NotDelivered naming what failed."""
        failures: list[str] = []

        def delivered(error: KafkaError | None, message: Any) -> None:
            if error is not None:
                failures.append(f"{message.topic()}: {error.str()}")

        producer = self._live()
        try:
            for topic, key, value in records:
                producer.produce(topic, key=_raw(key), value=value, on_delivery=delivered)
        except (BufferError, KafkaException) as refused:
            raise NotDelivered(f"not delivered: {refused}") from refused
        remaining = producer.flush(self._timeout_s)
        if failures or remaining:
            raise NotDelivered(f"not delivered: {failures or f'{remaining} record(s) unacknowledged after {self._timeout_s:.0f} s'}")

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._live().flush(timeout_s)
        if remaining:
            raise NotDelivered(f"{remaining} record(s) not delivered within {timeout_s:.0f} s")

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait for what is in flight (best effort) and release the client now, not whenever it is
        collected (maybe after the broker is gone)."""
        if self._producer is not None:
            self._producer.flush(timeout_s)
            self._producer = None

    def _live(self) -> Producer:
        if self._producer is None:
            raise NotDelivered("the producer is closed")
        return self._producer

    def __enter__(self) -> ConfirmedProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
