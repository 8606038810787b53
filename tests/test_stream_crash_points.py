"""Fault injection event by event: two workers in one group, one of them SIGKILLed at a named
crash point (``schemas/faults.py``), restarted; then every event produced is found in exactly one
place — one stored session of one batch, the dead-letter topic, or the late topic — and every
batch is announced with its true count and marked announced exactly once in the store.

The kill is deterministic: ``ES_FAULT_CRASH_AT`` makes a process kill itself the first time it
reaches the point, so the test knows which step was cut, instead of hoping a timed kill lands there.
Both workers start with it (the batcher runs in whichever owns the sessions partition); a worker
that died is restarted without it. ``make test`` runs seed 0 of every point; ``-m fault_matrix``
adds seeds 1 and 2.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from schemas.clickstream import Interaction, MarkIrrelevant, SearchSession, SessionEnd, parse_clickstream_event
from schemas.faults import ENV_VAR
from schemas.sessions import BatchStatus
from schemas.tasks import ReleaseBatch
from schemas.topics import TopicRegistry
from session_store.sqlite_store import SqliteSessionStore
from schemas.dead_letters import read_dead_letter
from tests.fixtures.broker import consume_all
from tests.test_stream_end_to_end import WorkerProcess, announcements, live_sessions, wait_for
from tests.test_stream_faults import send_command, send_sessions

pytestmark = pytest.mark.slow

STREAM_POINTS = [
    "sessionizer.after_produce", "sessionizer.after_save", "sessionizer.idle_close",
    "batcher.batch_close", "batcher.announce",
]


def identity(event) -> tuple[str, str, str]:
    """What makes one produced event itself: (kind, session, event id)."""
    if isinstance(event, Interaction):
        return ("interaction", event.session_id, event.event_id)
    kind = {SearchSession: "search", MarkIrrelevant: "irrelevant", SessionEnd: "end"}[type(event)]
    return (kind, event.session_id, "")


def workload(seed: int) -> list[list]:
    """Sessions that end, sessions left to the idle close, orphans, and late events."""
    sessions = live_sessions(120, seed=seed, prefix=f"s{seed}")
    for index, events in enumerate(sessions):
        sid = events[0].session_id
        if index % 10 == 0:  # no end: closed by the idle scan
            events[:] = [e for e in events if not isinstance(e, SessionEnd)]
        else:
            if not isinstance(events[-1], SessionEnd):
                events.append(SessionEnd(session_id=sid))
            if index % 10 == 1:  # after its end: late
                events.append(Interaction(session_id=sid, event_id=f"{sid}-late", object_id="item-0001"))
    orphans = [[Interaction(session_id=f"orphan{seed}-{i}", event_id=f"o{seed}-{i}-{j}", object_id="item-0002")
                for j in range(3)] for i in range(5)]
    return sessions + orphans


def outcomes(bootstrap: str, topics: TopicRegistry, store: SqliteSessionStore) -> dict[tuple, list[str]]:
    """Where each event ended up; a place listed twice is a duplicate. Topic records re-sent after a
    crash carry the same source offset and count once (a consumer drops them by it)."""
    found: dict[tuple, list[str]] = defaultdict(list)
    for batch in store.list_batches(limit=10_000):
        for session in store.iter_sessions(batch.batch_id):
            sid, where = session.session_id, f"batch {batch.batch_id}"
            found[("search", sid, "")].append(where)
            for event in session.events:
                found[("interaction", sid, event.event_id)].append(where)
            if session.is_irrelevant:
                found[("irrelevant", sid, "")].append(where)
            if session.close_reason == "end":
                found[("end", sid, "")].append(where)
    seen: set[tuple[str, int, int]] = set()
    for topic in (topics.clickstream_dlq.name, topics.clickstream_late.name):
        for message in consume_all(bootstrap, topic, quiet_s=1.0, timeout_s=30):
            letter = read_dead_letter(message.key(), message.value(), message.headers())
            source = (letter.source_topic, letter.source_partition, letter.source_offset)
            if (topic, *source[1:]) in seen:
                continue
            seen.add((topic, *source[1:]))
            where = f"{topic}@{source[1]}:{source[2]}"
            value = json.loads(letter.value or b"{}")
            if "events" in value or "event_ids" in value:  # a session's state (orphan, refused)
                sid = value["session_id"]
                for event_id in value.get("event_ids") or [e["event_id"] for e in value["events"]]:
                    found[("interaction", sid, event_id)].append(where)
                if value.get("is_irrelevant"):
                    found[("irrelevant", sid, "")].append(where)
                if value.get("ended_at"):
                    found[("end", sid, "")].append(where)
            else:
                found[identity(parse_clickstream_event(letter.value))].append(where)
    return found


def run_crash_point(point: str, seed: int, bootstrap: str, topics: TopicRegistry, tmp_path: Path) -> None:
    store_path = tmp_path / "shared.db"
    settings = dict(store_url=f"sqlite:///{store_path}", sessionizer_processes=1, session_gap_s=2.0,
                    batch_max_sessions=25)
    workers = [WorkerProcess(bootstrap, topics, tmp_path / name, **settings) for name in ("a", "b")]
    for worker in workers:
        worker.workdir.mkdir()
        worker.env[ENV_VAR] = point
    sessions = workload(seed)
    produced = [identity(e) for events in sessions for e in events]
    assert len(set(produced)) == len(produced)
    try:
        workers[0].start()
        store = SqliteSessionStore(store_path)
        workers[1].start()
        send_sessions(bootstrap, topics, sessions)

        def crashed() -> bool:
            return any(f"crash point {point} reached" in w.log_tail(10**7) for w in workers)

        def restart_the_dead() -> None:
            for worker in workers:
                if worker.process.poll() is not None:
                    worker.env.pop(ENV_VAR, None)
                    worker.start()

        def settled() -> bool:
            restart_the_dead()
            found = outcomes(bootstrap, topics, store)
            return crashed() and all(key in found for key in produced)

        wait_for(f"a crash at {point} and every event somewhere", settled, 240)
        restart_the_dead()
        send_command(bootstrap, topics, b"final", ReleaseBatch(release_id="final").model_dump_json().encode())
        wait_for("the final release", lambda: restart_the_dead() or store.find_batch_by_release("final"), 120)
        wait_for("every closed batch marked announced",
                 lambda: restart_the_dead() or not store.list_unannounced(), 60)
        closed = {b.batch_id: b for b in store.list_batches(BatchStatus.closed, limit=10_000)}
        def all_announced():
            found = announcements(bootstrap, topics)
            return found if {a.batch_id for a in found} >= set(closed) else None

        announced = wait_for("every batch on the batches topic", all_announced, 60)
        for worker in workers:
            worker.assert_alive()
            assert worker.stop() == 0
    finally:
        for worker in workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.kill()

    found = outcomes(bootstrap, topics, store)
    places = {key: found.get(key, []) for key in produced}
    assert {key: where for key, where in places.items() if len(where) != 1} == {}
    assert set(found) == set(produced), "something stored or dead-lettered that was never produced"
    assert any(where[0].startswith(topics.clickstream_late.name) for where in places.values())
    assert any(where[0].startswith(topics.clickstream_dlq.name) for where in places.values())
    # Batches: each announced with its true count; a repeat (a kill between ack and mark) is the
    # same record again, and the store marked each once.
    by_batch = defaultdict(set)
    for announcement in announced:
        by_batch[announcement.batch_id].add(announcement.model_dump_json())
    assert set(by_batch) == set(closed) and all(len(values) == 1 for values in by_batch.values())
    for announcement in announced:
        assert announcement.session_count == store.count_sessions(announcement.batch_id) > 0
    repeats = Counter(a.batch_id for a in announced)
    if point != "batcher.announce":
        assert set(repeats.values()) == {1}
    assert store.get_open_batch() is None or store.count_sessions(store.get_open_batch().batch_id) == 0


@pytest.mark.parametrize("point", STREAM_POINTS)
def test_a_worker_killed_at_a_crash_point_loses_and_duplicates_no_event(
    point: str, kafka_bootstrap: str, topics: TopicRegistry, tmp_path: Path
):
    run_crash_point(point, 0, kafka_bootstrap, topics, tmp_path)


@pytest.mark.fault_matrix
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("point", STREAM_POINTS)
def test_the_crash_point_matrix_with_more_seeds(
    point: str, seed: int, kafka_bootstrap: str, topics: TopicRegistry, tmp_path: Path
):
    run_crash_point(point, seed, kafka_bootstrap, topics, tmp_path)
