"""The stream worker under faults: killed mid-stream, fed garbage, told the same thing ten times.

Each test runs real worker processes against the session's tansu broker, on topics of its own.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ingest.partitioner import KAFKA_PARTITIONER
from ingest.producer import ClickstreamProducer
from schemas.base import utc_now
from schemas.batches import BatchClosed
from schemas.clickstream import SessionEnd
from schemas.dead_letters import DeadLetter
from schemas.sessions import BatchStatus
from schemas.tasks import ReleaseBatch
from schemas.topics import TopicRegistry
from stream_processors.announcements import batch_closed
from schemas.dead_letters import read_dead_letter
from tests.fixtures.broker import consume, consume_all
from tests.test_stream_end_to_end import (  # noqa: F401  (worker_factory is a fixture)
    announcements,
    live_sessions,
    stored_count,
    stored_session_ids,
    wait_for,
    worker_factory,
)

pytestmark = pytest.mark.slow


def ended_sessions(count: int, seed: int, prefix: str) -> list[list]:
    """Sessions that each end with an explicit SessionEnd, so that all close without waiting."""
    sessions = live_sessions(count, seed=seed, prefix=prefix)
    for events in sessions:
        if not isinstance(events[-1], SessionEnd):
            events.append(SessionEnd(session_id=events[0].session_id))
    return sessions


def send_sessions(bootstrap: str, topics: TopicRegistry, sessions: list[list]) -> int:
    with ClickstreamProducer(bootstrap, topics, config={"linger.ms": 20}) as producer:
        for events in sessions:
            producer.send_many(events)
        producer.flush(60)
    return sum(len(events) for events in sessions)


def send_command(bootstrap: str, topics: TopicRegistry, key: bytes | None, value: bytes | None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topics.commands.name, key=key, value=value)
    assert producer.flush(10) == 0


def closed_batch_ids(store) -> set[str]:
    return {b.batch_id for b in store.list_batches(BatchStatus.closed, limit=10_000)}


# --- (a) kill -9 in the middle of 100 000 events --------------------------------------------------

def test_a_worker_killed_mid_stream_and_restarted_stores_every_session_once_and_announces_every_batch_once(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    sessions = ended_sessions(25_000, seed=11, prefix="crash")
    while sum(len(events) for events in sessions) < 100_000:
        sessions += ended_sessions(500, seed=len(sessions), prefix=f"more{len(sessions)}")
    expected = {events[0].session_id for events in sessions}
    sent = send_sessions(kafka_bootstrap, topics, sessions)
    assert sent >= 100_000

    # 997: not a divisor of the session count, so a partial batch is left open for the release.
    worker = worker_factory(batch_max_sessions=997, sessionizer_processes=2, session_gap_s=3600).start()
    store = worker.store()
    stored_at_kill = wait_for("a tenth of the sessions stored",
                              lambda: (n := stored_count(store)) >= len(expected) // 10 and n,
                              90, worker)
    # The whole process group: the worker and its sessionizer processes die at once, mid-batch,
    # without a flush, a commit or a goodbye to either consumer group.
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()
    assert stored_at_kill < len(expected), "the kill came too late to interrupt anything"

    worker.start()
    wait_for("every session stored", lambda: stored_count(store) >= len(expected), 120, worker)
    # The last, partial batch stays open until something closes it: a release does.
    send_command(kafka_bootstrap, topics, b"final", ReleaseBatch(release_id="final").model_dump_json().encode())
    wait_for("the release", lambda: store.find_batch_by_release("final"), 60, worker)
    batches = closed_batch_ids(store)
    def all_announced() -> list[BatchClosed] | None:
        found = announcements(kafka_bootstrap, topics)
        return found if {a.batch_id for a in found} >= batches else None

    announced = wait_for("every batch announced", all_announced, 60, worker)
    assert worker.stop() == 0

    counts = stored_session_ids(store)
    assert set(counts) == expected and set(counts.values()) == {1}  # every session, exactly once
    per_batch = {b.batch_id: store.count_sessions(b.batch_id) for b in store.list_batches(limit=10_000)}
    assert sum(per_batch.values()) == len(expected)  # hence no session in two batches
    assert {b for b, n in per_batch.items() if n} <= batches and store.get_open_batch() is None
    times_announced = Counter(a.batch_id for a in announced)
    assert set(times_announced) == batches and set(times_announced.values()) == {1}
    for closed in announced:
        assert closed.session_count == per_batch[closed.batch_id]


def test_a_takeover_announces_exactly_the_closed_batches_the_store_has_not_marked(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    worker = worker_factory(sessionizer_processes=0)
    store = worker.store()
    # What a crash between the close and the announcement leaves behind.
    now = utc_now()
    store.open_batch("b-orphaned-close", now)
    store.put_sessions("b-orphaned-close", [])
    store.close_batch("b-orphaned-close", now, "size")
    # Acknowledged and marked before a crash: the store says so, whatever the topic holds.
    store.open_batch("b-marked", now)
    store.close_batch("b-marked", now, "size")
    store.mark_announced("b-marked", now)
    worker.start()
    found = wait_for("the announcement", lambda: announcements(kafka_bootstrap, topics), 60, worker)
    worker.stop()
    worker.start()  # a second start must not announce it again
    send_sessions(kafka_bootstrap, topics, ended_sessions(2, seed=5, prefix="after"))
    wait_for("later sessions", lambda: stored_count(store) >= 2, 60, worker)
    assert worker.stop() == 0
    assert [a.batch_id for a in announcements(kafka_bootstrap, topics)] == ["b-orphaned-close"]
    assert found[0].close_reason == "size"
    assert store.list_unannounced() == []



def test_a_takeover_marks_a_batch_whose_announcement_reached_the_topic_before_the_crash(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    worker = worker_factory(sessionizer_processes=0)
    store = worker.store()
    # What a kill after the broker took the BatchClosed and before the store marked it leaves behind.
    now = utc_now()
    store.open_batch("b-sent-unmarked", now)
    store.close_batch("b-sent-unmarked", now, "size")
    record = next(b for b in store.list_unannounced() if b.batch_id == "b-sent-unmarked")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": KAFKA_PARTITIONER})
    producer.produce(topics.batches.name, key=b"b-sent-unmarked", value=batch_closed(record).model_dump_json().encode())
    assert producer.flush(30) == 0
    worker.start()
    wait_for("the takeover's mark", lambda: store.list_unannounced() == [], 60, worker)
    assert worker.stop() == 0
    assert [a.batch_id for a in announcements(kafka_bootstrap, topics)] == ["b-sent-unmarked"]  # once, not twice


# --- (b) malformed input ---------------------------------------------------------------------------

def _search(session_id: str, **changes) -> dict:
    event = {
        "type": "search", "session_id": session_id, "search_query": "red shoes",
        "search_results": [{"object_id": "o1", "rank": 1}, {"object_id": "o2", "rank": 2}],
        "created_at": utc_now().isoformat(),
    }
    event.update(changes)
    return event


def _click(session_id: str, **changes) -> dict:
    event = {"type": "interaction", "session_id": session_id, "event_id": "e1", "object_id": "o1"}
    event.update(changes)
    return event


def _without(event: dict, field: str) -> dict:
    return {k: v for k, v in event.items() if k != field}


def _json(event: object) -> bytes:
    return json.dumps(event).encode()


MAX_EVENT_BYTES = 64 * 1024

# (name, key, value, words the reason must contain)
MALFORMED: list[tuple[str, bytes | None, bytes | None, str]] = [
    ("invalid JSON", b"m01", b'{"type": "search", "session_id": ', "invalid json"),
    ("not an object", b"m02", b"[1, 2, 3]", "object"),
    ("a bare string", b"m03", b'"hello"', "object"),
    ("empty value", b"m04", b"", "empty"),
    ("null value", b"m05", None, "empty"),
    ("binary garbage", b"m06", bytes(range(256)) * 2, "invalid"),
    ("no session_id", b"m07", _json(_without(_search("m07"), "session_id")), "session_id"),
    ("no search_query", b"m08", _json(_without(_search("m08"), "search_query")), "search_query"),
    ("no search_results", b"m09", _json(_without(_search("m09"), "search_results")), "search_results"),
    ("no event_id", b"m10", _json(_without(_click("m10"), "event_id")), "event_id"),
    ("no object_id", b"m11", _json(_without(_click("m11"), "object_id")), "object_id"),
    ("no type", b"m12", _json(_without(_click("m12"), "type")), "type"),
    ("results not a list", b"m13", _json(_search("m13", search_results="o1,o2")), "search_results"),
    ("rank not a number", b"m14", _json(_search("m14", search_results=[{"object_id": "o", "rank": "top"}])), "rank"),
    ("empty session_id", b"", _json(_click("")), "session_id"),
    ("blank session_id", b"   ", _json(_click("   ")), "session_id"),
    ("unknown type", b"m17", _json({**_click("m17"), "type": "purchase"}), "purchase"),
    ("oversized", b"m18", _json(_search("m18", search_meta={"blob": "x" * MAX_EVENT_BYTES})), "oversized"),
    ("unknown field", b"m19", _json(_click("m19", colour="red")), "colour"),
    ("newer schema_version", b"m20", _json(_click("m20", schema_version=2)), "schema_version"),
    ("key differs from session_id", b"someone-else", _json(_click("m21")), "differs"),
    ("null key", None, _json(_click("m22")), "missing key"),
    ("key not UTF-8", b"\xff\xfe", _json(_click("m23")), "utf-8"),
    ("duplicate object_ids", b"m24",
     _json(_search("m24", search_results=[{"object_id": "o", "rank": 1}, {"object_id": "o", "rank": 2}])), "twice"),
    ("bad timestamp", b"m25", _json(_click("m25", created_at="yesterday")), "created_at"),
    ("bad event_type", b"m26", _json(_click("m26", event_type="Click!")), "event_type"),
    ("empty search_query", b"m27", _json(_search("m27", search_query="")), "search_query"),
    ("negative schema_version", b"m28", _json(_click("m28", schema_version=0)), "schema_version"),
    ("rank not finite", b"m29", b'{"type": "search", "session_id": "m29", "search_query": "q", '
     b'"search_results": [{"object_id": "o", "rank": NaN}]}', "finite"),
    ("nested beyond any reason", b"m30", b"[" * 50_000, "recursion"),
]


def test_malformed_input_of_every_kind_is_dead_lettered_with_its_reason_and_valid_events_around_it_go_through(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    assert len(MALFORMED) >= 20
    valid = ended_sessions(len(MALFORMED) + 1, seed=3, prefix="good")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": KAFKA_PARTITIONER})
    for index, session in enumerate(valid):  # a valid session, then a bad record, and so on
        for event in session:
            producer.produce(topics.clickstream.name, key=event.session_id.encode(), value=event.model_dump_json())
        if index < len(MALFORMED):
            _, key, value, _ = MALFORMED[index]
            producer.produce(topics.clickstream.name, key=key, value=value)
    assert producer.flush(30) == 0

    worker = worker_factory(sessionizer_processes=0, max_event_bytes=MAX_EVENT_BYTES).start()
    store = worker.store()
    expected = {s[0].session_id for s in valid}
    wait_for("the valid sessions", lambda: set(stored_session_ids(store)) >= expected, 60, worker)
    letters = [read_dead_letter(m.key(), m.value(), m.headers())
               for m in consume(kafka_bootstrap, topics.clickstream_dlq.name, len(MALFORMED), timeout_s=30)]
    worker.assert_alive()  # nothing in there made it crash
    assert worker.stop() == 0

    assert set(stored_session_ids(store)) == expected
    assert len(consume_all(kafka_bootstrap, topics.clickstream_dlq.name)) == len(MALFORMED)
    # Kafka clients may read an empty key or value back as null: compare them as bytes.
    by_record = {(letter.key or b"", letter.value or b""): letter for letter in letters}
    for name, key, value, words in MALFORMED:
        letter: DeadLetter | None = by_record.get((key or b"", value or b""))
        assert letter is not None, f"{name}: not in the dead-letter topic"
        assert words.lower() in letter.reason.lower(), f"{name}: reason {letter.reason!r}"
        assert letter.source_topic == topics.clickstream.name and letter.source_offset >= 0


# --- (c) one release, sent ten times --------------------------------------------------------------

def test_a_release_sent_ten_times_closes_exactly_one_batch(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    worker = worker_factory(batch_max_sessions=10_000, sessionizer_processes=1).start()
    store = worker.store()
    first = ended_sessions(30, seed=8, prefix="first")
    send_sessions(kafka_bootstrap, topics, first)
    wait_for("30 stored sessions", lambda: stored_count(store) >= 30, 60, worker)

    release = ReleaseBatch(release_id="release-1")
    for _ in range(10):  # ten sends, each its own command (new command_id), one release id
        again = ReleaseBatch(release_id="release-1").model_dump_json().encode()
        send_command(kafka_bootstrap, topics, b"release-1", again)
    send_command(kafka_bootstrap, topics, b"junk", b"{not a command")
    closed = wait_for("the release", lambda: store.find_batch_by_release(release.release_id), 60, worker)

    # Sessions after the release go to a new batch, which the earlier release id does not close.
    second = ended_sessions(5, seed=9, prefix="second")
    send_sessions(kafka_bootstrap, topics, second)
    wait_for("5 more stored sessions", lambda: stored_count(store) >= 35, 60, worker)
    send_command(kafka_bootstrap, topics, b"release-1", ReleaseBatch(release_id="release-1").model_dump_json().encode())
    send_command(kafka_bootstrap, topics, b"release-2", ReleaseBatch(release_id="release-2").model_dump_json().encode())
    wait_for("the second release", lambda: store.find_batch_by_release("release-2"), 60, worker)
    time.sleep(1.0)
    assert worker.stop() == 0

    announced: list[BatchClosed] = announcements(kafka_bootstrap, topics)
    assert [(a.release_id, a.session_count) for a in announced] == [("release-1", 30), ("release-2", 5)]
    assert closed.session_count == 30 and closed.close_reason == "release"
    assert len(store.list_batches(BatchStatus.closed)) == 2 and store.get_open_batch() is None
    (dead,) = consume_all(kafka_bootstrap, topics.commands_dlq.name)
    assert dead.value() == b"{not a command" and read_dead_letter(dead.key(), dead.value(), dead.headers()).reason


# --- a sessionizer process dying takes its worker down --------------------------------------------

def test_a_dead_sessionizer_process_stops_its_worker_with_an_error(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    # Half a worker must not keep running: it exits non-zero, and whatever supervises it restarts
    # it whole (its partitions are replayed from the last commit meanwhile).
    worker = worker_factory(sessionizer_processes=2).start()
    children = wait_for("two sessionizer processes", lambda: len(found := _sessionizers(worker.process.pid)) == 2
                        and found, 30, worker)
    os.kill(children[0], signal.SIGKILL)
    assert worker.process.wait(30) != 0
    time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in children), "a child outlived its worker"


def _sessionizers(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in command and b"pipe_handle" in command:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False
