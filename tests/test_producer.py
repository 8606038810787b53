"""The producer SDK against the real broker: what goes in comes out, keyed by session; invalid events
never leave the caller; every failed delivery is reported to the caller."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from embedding_studio.embedded.broker import TansuBroker
from messaging.topics import ensure_topics
from simulation.emulator import emulate, emulate_sessions
from ingest.partitioner import partition_for
from ingest.producer import ClickstreamProducer, DeliveryError, DeliveryReport
from schemas.base import ContractError
from schemas.clickstream import Interaction, SessionEnd, parse_clickstream_event
from schemas.topics import TopicRegistry
from tests.fixtures.broker import consume, consume_all


def test_events_come_back_unchanged_keyed_by_session_and_in_order(kafka_bootstrap: str, topics: TopicRegistry) -> None:
    events = list(emulate(12, seed=1))

    with ClickstreamProducer(kafka_bootstrap, topics) as producer:
        assert producer.send_many(events) == len(events)

    messages = consume(kafka_bootstrap, topics.clickstream.name, len(events))
    assert sorted(m.value() for m in messages) == sorted(e.model_dump_json().encode() for e in events)
    for message in messages:
        event = parse_clickstream_event(message.value())
        assert message.key() == event.session_id.encode("utf-8")
        assert message.partition() == partition_for(event.session_id, topics.clickstream.partitions)
        assert dict(message.headers()) == {
            "es-event-type": event.type.encode(), "es-schema-version": b"1", "content-type": b"application/json",
        }
    # Per session, the order sent is the order stored (one partition, offsets increasing).
    by_session: dict[str, list] = {}
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        by_session.setdefault(message.key().decode(), []).append(parse_clickstream_event(message.value()))
    for events_of_session in emulate_sessions(12, seed=1):
        assert by_session[events_of_session[0].session_id] == events_of_session


def test_mappings_json_text_and_bytes_are_validated_and_sent_as_the_contract(
    kafka_bootstrap: str, topics: TopicRegistry
) -> None:
    raw = {"type": "interaction", "session_id": "s-1", "event_id": "e-1", "object_id": "item-9",
           "created_at": "2026-01-01T00:00:00"}

    with ClickstreamProducer(kafka_bootstrap, topics) as producer:
        producer.send(raw)
        producer.send(json.dumps({**raw, "event_id": "e-2"}))
        producer.send(json.dumps({**raw, "event_id": "e-3"}).encode())

    values = sorted((json.loads(m.value()) for m in consume(kafka_bootstrap, topics.clickstream.name, 3)),
                    key=lambda value: value["event_id"])
    assert [v["event_id"] for v in values] == ["e-1", "e-2", "e-3"]
    # Normalised on the way: defaults filled in, the naive time made explicit UTC.
    assert values[0]["created_at"] == "2026-01-01T00:00:00Z"
    assert values[0]["event_type"] == "click" and values[0]["schema_version"] == 1


def test_an_invalid_event_raises_naming_the_field_and_nothing_is_sent(
    kafka_bootstrap: str, topics: TopicRegistry
) -> None:
    with ClickstreamProducer(kafka_bootstrap, topics) as producer:
        with pytest.raises(ContractError, match="session_id: String should have at least 1 character"):
            producer.send({"type": "session_end", "session_id": ""})
        with pytest.raises(ContractError, match="object_id: Field required"):
            producer.send('{"type": "interaction", "session_id": "s", "event_id": "e"}')
        with pytest.raises(ContractError, match="Invalid JSON"):
            producer.send("{not json")
        with pytest.raises(ContractError, match="expected a clickstream event"):
            producer.send(42)  # type: ignore[arg-type]

    assert consume_all(kafka_bootstrap, topics.clickstream.name) == []
    assert producer.delivered == 0


def test_send_many_is_all_or_nothing_and_names_the_bad_position(kafka_bootstrap: str, topics: TopicRegistry) -> None:
    good = list(emulate(3))
    bad = {"type": "interaction", "session_id": "s", "event_id": "e", "object_id": "o", "event_type": "Bad Type"}

    with ClickstreamProducer(kafka_bootstrap, topics) as producer:
        with pytest.raises(ContractError, match=rf"event #{len(good)}: interaction.event_type: String should match"):
            producer.send_many([*good, bad, *good])

    assert consume_all(kafka_bootstrap, topics.clickstream.name) == []


def test_each_delivery_is_reported_once_to_the_callback_with_the_callers_context(
    kafka_bootstrap: str, topics: TopicRegistry
) -> None:
    reports: list[DeliveryReport] = []
    events = list(emulate(5))

    with ClickstreamProducer(kafka_bootstrap, topics, on_delivery=reports.append) as producer:
        producer.send_many(events, contexts=range(len(events)))

    assert sorted(r.context for r in reports) == list(range(len(events)))
    assert all(r.ok and r.offset >= 0 and r.topic == topics.clickstream.name for r in reports)
    assert {(r.session_id, r.event_type) for r in reports} == {(e.session_id, e.type) for e in events}
    assert producer.delivered == len(events) and producer.failed == 0


def test_close_flushes_what_was_only_enqueued(kafka_bootstrap: str, topics: TopicRegistry) -> None:
    producer = ClickstreamProducer(kafka_bootstrap, topics, config={"linger.ms": 1000})
    producer.send(SessionEnd(session_id="s-1"))
    producer.send(SessionEnd(session_id="s-2"))
    assert producer.delivered == 0  # still lingering in the client

    producer.close()

    assert producer.delivered == 2
    assert len(consume(kafka_bootstrap, topics.clickstream.name, 2)) == 2
    producer.close()  # a second close is harmless
    with pytest.raises(RuntimeError, match="closed"):
        producer.send(SessionEnd(session_id="s-3"))


def test_leaving_the_block_by_an_exception_still_delivers_and_keeps_the_exception(
    kafka_bootstrap: str, topics: TopicRegistry
) -> None:
    with pytest.raises(KeyError):
        with ClickstreamProducer(kafka_bootstrap, topics) as producer:
            producer.send(SessionEnd(session_id="s-1"))
            raise KeyError("the caller's own problem")

    assert len(consume(kafka_bootstrap, topics.clickstream.name, 1)) == 1


def test_settings_the_contract_depends_on_cannot_be_overridden(kafka_bootstrap: str) -> None:
    with pytest.raises(ValueError, match="partitioner"):
        ClickstreamProducer(kafka_bootstrap, config={"partitioner": "consistent_random"})
    with pytest.raises(ValueError, match="enable.idempotence"):
        ClickstreamProducer(kafka_bootstrap, config={"enable.idempotence": False})


def test_records_a_broker_never_acknowledged_are_listed_by_flush(tmp_path: Path) -> None:
    """A broker that dies: the records still queued time out, and flush raises with each of them."""
    registry = TopicRegistry(prefix="gone")  # a broker of its own: no other test shares it
    reports: list[DeliveryReport] = []
    with TansuBroker(log_path=tmp_path / "short-lived.log") as broker:
        ensure_topics(broker.bootstrap, registry)
        producer = ClickstreamProducer(
            broker.bootstrap, registry, on_delivery=reports.append,
            config={"message.timeout.ms": 1500, "log_level": 0},  # librdkafka would log each refused reconnect
        )
        producer.send(SessionEnd(session_id="before"))
        producer.flush(10)  # connected, one record acknowledged
    # The broker is gone now.
    started = time.monotonic()
    producer.send(SessionEnd(session_id="after-1"), context="line 1")
    producer.send(Interaction(session_id="after-2", event_id="e", object_id="o"), context="line 2")

    with pytest.raises(DeliveryError) as failed:
        producer.flush(10)

    assert time.monotonic() - started < 8
    error = failed.value
    assert [(f.session_id, f.context) for f in error.failures] == [("after-1", "line 1"), ("after-2", "line 2")]
    assert all(f.error is not None and f.value is not None for f in error.failures)
    assert str(error).startswith("2 record(s) not delivered") and "session_id='after-2'" in str(error)
    assert [r.ok for r in reports] == [True, False, False]
    assert producer.delivered == 1 and producer.failed == 2
    producer.flush(1)  # failures are reported once: nothing left to raise
    producer.close()


def test_without_a_callback_acknowledged_records_are_counted_and_failures_still_listed(tmp_path: Path) -> None:
    """With no ``on_delivery`` librdkafka reports failures only: the acknowledged records are
    counted (``delivered``), and every record that failed is still in flush's DeliveryError."""
    registry = TopicRegistry(prefix="gone-bulk")
    with TansuBroker(log_path=tmp_path / "short-lived.log") as broker:
        ensure_topics(broker.bootstrap, registry)
        producer = ClickstreamProducer(broker.bootstrap, registry, config={"message.timeout.ms": 1500, "log_level": 0})
        acknowledged = producer.send_many(list(emulate(3)))
        producer.flush(10)
        assert producer.delivered == acknowledged and producer.failed == 0
    late = [SessionEnd(session_id=f"after-{i}") for i in range(3)]
    producer.send_many(late)

    with pytest.raises(DeliveryError) as failed:
        producer.flush(10)

    assert sorted(f.session_id for f in failed.value.failures) == ["after-0", "after-1", "after-2"]
    assert all(f.value is not None for f in failed.value.failures)  # kept for a re-send
    assert producer.delivered == acknowledged and producer.failed == 3
    producer.close()
