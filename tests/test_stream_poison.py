"""No input stops the stream: poison records, oversize states, misrouted events and a store that
refuses a state each end in the dead-letter topic with their reason, and the worker goes on.

Real worker processes against the session's tansu broker and a real SQLite store; store failures
are injected with SQLite itself (a corrupt row, a trigger), not with a fake store.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from ingest.partitioner import KAFKA_PARTITIONER, partition_for
from schemas.base import utc_now
from schemas.clickstream import Interaction, SearchSession, SessionEnd
from schemas.topics import TopicRegistry
from session_store.sqlite_store import SqliteSessionStore
from schemas.dead_letters import read_dead_letter
from tests.fixtures.broker import consume, consume_all
from tests.test_stream_end_to_end import stored_session_ids, wait_for, worker_factory  # noqa: F401
from tests.test_stream_faults import ended_sessions, send_sessions

pytestmark = pytest.mark.slow


def _producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "partitioner": KAFKA_PARTITIONER, "message.max.bytes": 4 << 20})


def _send(producer: Producer, topic: str, *events, partition: int | None = None) -> None:
    for event in events:
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, key=event.session_id.encode(), value=event.model_dump_json().encode(), **extra)


def _letters(bootstrap: str, topics: TopicRegistry, count: int):
    return [read_dead_letter(m.key(), m.value(), m.headers())
            for m in consume(bootstrap, topics.clickstream_dlq.name, count, timeout_s=60)]


def test_every_topic_is_created_with_the_producers_record_limit_and_the_batches_topic_is_compacted(
    kafka_bootstrap: str, topics: TopicRegistry
):
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resources = [ConfigResource("topic", spec.name) for spec in topics.all()]
    configs = {res.name: future.result() for res, future in admin.describe_configs(resources).items()}
    for spec in topics.all():
        assert configs[spec.name]["max.message.bytes"].value == str(topics.max_message_bytes), spec.name
    assert configs[topics.batches.name]["cleanup.policy"].value == "compact"


def test_an_orphan_session_of_fifty_100kb_interactions_is_dead_lettered_trimmed_and_the_worker_goes_on(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    # Each event is well under max_event_bytes; together they hold a 5 MB state, more than any
    # record may carry: this used to end every worker that took the partition in MSG_SIZE_TOO_LARGE.
    worker = worker_factory(session_gap_s=1.0, sessionizer_processes=1).start()
    producer = _producer(kafka_bootstrap)
    blob = "x" * 100_000
    big = [Interaction(session_id="fat-orphan", event_id=f"e{i:02d}", object_id="o1", meta={"blob": blob})
           for i in range(50)]
    _send(producer, topics.clickstream.name, *big)
    assert producer.flush(30) == 0
    (letter,) = _letters(kafka_bootstrap, topics, 1)
    assert letter.key == b"fat-orphan" and "without a search" in letter.reason and "trimmed" in letter.reason
    kept = json.loads(letter.value)
    assert kept["event_ids"] == [e.event_id for e in big] and len(letter.value) < topics.max_message_bytes

    # Still up, still working.
    after = ended_sessions(3, seed=21, prefix="after-fat")
    send_sessions(kafka_bootstrap, topics, after)
    store = worker.store()
    wait_for("the later sessions", lambda: set(stored_session_ids(store)) >= {s[0].session_id for s in after},
             60, worker)
    worker.assert_alive()
    assert worker.stop() == 0


def test_an_event_on_another_partition_than_its_key_is_dead_lettered_naming_the_partitioner(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    worker = worker_factory(sessionizer_processes=0).start()
    producer = _producer(kafka_bootstrap)
    sid = "wrong-partition"
    home = partition_for(sid, topics.clickstream_partitions)
    elsewhere = (home + 1) % topics.clickstream_partitions
    search = SearchSession(session_id=sid, search_query="q", search_results=[{"object_id": "o1", "rank": 1}],
                           created_at=utc_now())
    click = Interaction(session_id=sid, event_id="c1", object_id="o1", created_at=utc_now())
    # A click on another partition at a lower offset than the search: it used to be skipped as replayed.
    _send(producer, topics.clickstream.name, click, partition=elsewhere)
    _send(producer, topics.clickstream.name, search, SessionEnd(session_id=sid), partition=home)
    assert producer.flush(30) == 0
    store = worker.store()
    stored = wait_for("the session", lambda: store.get_session(sid), 60, worker)
    (letter,) = _letters(kafka_bootstrap, topics, 1)
    assert letter.value == click.model_dump_json().encode() and letter.source_partition == elsewhere
    assert f"partitioner={KAFKA_PARTITIONER}" in letter.reason and f"partition {home}" in letter.reason
    assert stored.events == []
    assert worker.stop() == 0


def test_a_record_that_fails_every_time_is_dead_lettered_after_the_attempts_and_the_rest_go_through(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    worker = worker_factory(sessionizer_processes=1, sessionizer_max_attempts=3)
    # A state row no code of this version can read (a bug, a foreign writer): every batch holding
    # an event of that session fails to load, again and again.
    SqliteSessionStore(worker.store_path).close()
    with sqlite3.connect(worker.store_path) as db:
        db.execute("INSERT INTO open_sessions (session_id, partition, last_seen_us, body) "
                   "VALUES ('poison', 0, 0, '{\"not\": \"a state\"}')")
    good = ended_sessions(5, seed=31, prefix="good")
    producer = _producer(kafka_bootstrap)
    _send(producer, topics.clickstream.name, *good[0], *good[1])
    _send(producer, topics.clickstream.name, Interaction(session_id="poison", event_id="p1", object_id="o1"))
    for events in good[2:]:
        _send(producer, topics.clickstream.name, *events)
    assert producer.flush(30) == 0
    worker.start()
    store = worker.store()
    wait_for("the good sessions", lambda: set(stored_session_ids(store)) >= {s[0].session_id for s in good},
             90, worker)
    (letter,) = _letters(kafka_bootstrap, topics, 1)
    assert letter.key == b"poison" and "failed 3 times in a row" in letter.reason
    worker.assert_alive()
    assert worker.stop() == 0
    assert len(consume_all(kafka_bootstrap, topics.clickstream_dlq.name)) == 1


def test_a_state_the_store_refuses_is_dead_lettered_with_its_events_and_the_worker_goes_on(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    worker = worker_factory(sessionizer_processes=1)
    SqliteSessionStore(worker.store_path).close()
    with sqlite3.connect(worker.store_path) as db:  # the store's own refusal, for one session
        for op in ("INSERT", "UPDATE"):
            db.execute(f"CREATE TRIGGER refuse_{op.lower()} BEFORE {op} ON open_sessions "
                       "WHEN NEW.session_id = 'refused' BEGIN SELECT RAISE(ABORT, 'row refused by policy'); END")
    producer = _producer(kafka_bootstrap)
    search = SearchSession(session_id="refused", search_query="q", search_results=[{"object_id": "o1", "rank": 1}])
    click = Interaction(session_id="refused", event_id="r1", object_id="o1")
    good = ended_sessions(4, seed=41, prefix="fine")
    _send(producer, topics.clickstream.name, search, click, *[e for s in good for e in s])
    assert producer.flush(30) == 0
    worker.start()
    store = worker.store()
    wait_for("the other sessions", lambda: set(stored_session_ids(store)) >= {s[0].session_id for s in good},
             90, worker)
    (letter,) = _letters(kafka_bootstrap, topics, 1)
    assert letter.key == b"refused" and "refused this session's state" in letter.reason
    assert "row refused by policy" in letter.reason
    assert [e["event_id"] for e in json.loads(letter.value)["events"]] == ["r1"]
    worker.assert_alive()
    assert worker.stop() == 0
