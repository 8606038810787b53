"""`embedding-studio replay`: a stored batch trained again by command, and a time range of the raw
clickstream rebuilt into a batch of its own by the stream worker's rules, the same sessions however
often it is replayed."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import Producer

from embedding_studio.cli import main
from simulation.emulator import emulate_sessions
from ingest.producer import ClickstreamProducer
from schemas.batches import BatchClosed
from schemas.clickstream import Interaction, SearchSession, SessionEnd
from schemas.sessions import BatchStatus, StoredSession
from schemas.tasks import ReplayBatch, parse_task_command
from schemas.topics import TopicRegistry
from session_store.sqlite_store import SqliteSessionStore
from stream_processors.replay import (
    RangeSessionizer,
    ReplayRange,
    original_session_id,
    part_batch_id,
    replay_range,
    write_batch,
    replay_session_id,
)
from stream_processors.sessionizer import SessionRules
from tests.fixtures.broker import consume, consume_all

RULES = SessionRules()  # the settings' defaults: gap 30 min, 500 events, 4 h
MAX_SESSIONS = 10_000  # ES_BATCH_MAX_SESSIONS's default


@pytest.fixture
def system(monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, topics: TopicRegistry, tmp_path: Path) -> Path:
    """Environment of a running system; returns the SQLite store's path."""
    store_path = tmp_path / "sessions.db"
    monkeypatch.setenv("ES_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("ES_TOPIC_PREFIX", topics.prefix)
    monkeypatch.setenv("ES_CLICKSTREAM_PARTITIONS", str(topics.clickstream_partitions))
    monkeypatch.setenv("ES_STORE_URL", f"sqlite:///{store_path}")
    return store_path


def test_replay_of_a_batch_sends_a_replay_batch_command(
    system: Path, topics: TopicRegistry, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--batch-id", "b-20260101", "--method", "My Method", "--idempotency-key", "again-1"]) == 0

    [message] = consume(kafka_bootstrap, topics.commands.name, 1)
    command = parse_task_command(message.value())
    assert isinstance(command, ReplayBatch)
    assert (command.batch_id, command.fine_tuning_method, command.idempotency_key) == (
        "b-20260101", "My Method", "again-1")
    assert message.key() == b"again-1"
    assert "idempotency key: again-1" in capsys.readouterr().out


def _pause() -> datetime:
    """A moment strictly between the records produced before and after it (Kafka stamps in ms)."""
    time.sleep(0.03)
    moment = datetime.now(timezone.utc)
    time.sleep(0.03)
    return moment


def _stored(store_path: Path, batch_id: str) -> dict[str, StoredSession]:
    with SqliteSessionStore(store_path) as store:
        return {s.session_id: s for s in store.iter_sessions(batch_id)}


def test_replay_of_a_time_range_rebuilds_its_sessions_the_same_way_every_time(
    system: Path, topics: TopicRegistry, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inside = list(emulate_sessions(40, seed=3, session_prefix="in"))
    before = list(emulate_sessions(5, seed=4, session_prefix="before"))
    after = list(emulate_sessions(5, seed=5, session_prefix="after"))
    split_search, *split_rest = next(emulate_sessions(1, seed=6, session_prefix="split"))
    cut = next(s for s in emulate_sessions(20, seed=7, session_prefix="cut") if len(s) >= 3 and
               isinstance(s[1], Interaction))
    cut_inside, cut_after = cut[:2], cut[2:]
    raw = Producer({"bootstrap.servers": kafka_bootstrap})
    with ClickstreamProducer(kafka_bootstrap, topics) as producer:
        producer.send_many([e for s in before for e in s] + [split_search])
        producer.flush()
        start = _pause()
        producer.send_many([e for s in inside for e in s] + split_rest + cut_inside)
        producer.flush()
        # Records the stream worker dead-letters: not JSON, keyed by another session, unkeyed.
        search = inside[0][0].model_copy(update={"session_id": "in-mismatch"}).model_dump_json()
        raw.produce(topics.clickstream.name, key=b"in-000001", value=b"{not json")
        raw.produce(topics.clickstream.name, key=b"someone-else", value=search.encode())
        raw.produce(topics.clickstream.name, value=inside[1][1].model_dump_json().encode())
        assert raw.flush(10) == 0
        end = _pause()
        producer.send_many([e for s in after for e in s] + cut_after)
        producer.flush()

    argv = ["replay", "--from-time", start.isoformat(), "--to-time", end.isoformat(), "--no-train"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    range_id = ReplayRange(topics.clickstream.name, start, end).range_id(RULES, 1 << 20, MAX_SESSIONS)
    batch_id = part_batch_id(range_id, 1)  # one part: the range holds fewer sessions than a batch
    assert f"batch {batch_id}" in out
    events_in_range = sum(len(s) for s in inside) + len(split_rest) + len(cut_inside) + 3
    assert f"read {events_in_range} event(s)" in out
    assert "invalid, skipped: 3 (" in out
    assert "1 without a search dropped" in out  # the split session: its search is before the range

    with SqliteSessionStore(system) as store:
        batch = store.get_batch(batch_id)
        assert batch is not None and batch.status is BatchStatus.closed and batch.close_reason == "replay"
        assert batch.session_count == len(inside) + 1
    first = _stored(system, batch_id)
    assert {original_session_id(i) for i in first} == {s[0].session_id for s in inside} | {cut[0].session_id}
    for events in inside:
        search = events[0]
        assert isinstance(search, SearchSession)
        stored = first[replay_session_id(search.session_id, range_id)]
        clicks = [e for e in events if isinstance(e, Interaction)]
        assert [e.event_id for e in stored.events] == [e.event_id for e in clicks]
        assert stored.search_query == search.search_query and stored.created_at == search.created_at
        ended = any(isinstance(e, SessionEnd) for e in events)
        # Sessions without an end event are still open at the range end, and close there.
        assert stored.close_reason == ("end" if ended else "gap")
    cut_stored = first[replay_session_id(cut[0].session_id, range_id)]
    assert [e.event_id for e in cut_stored.events] == [cut[1].event_id]  # what came after the range is not in
    assert consume_all(kafka_bootstrap, topics.batches.name) == []  # --no-train: not announced

    # Again: the same batch, as it was, and this time announced and sent for training.
    assert main(argv[:-1]) == 0
    out = capsys.readouterr().out
    assert "replayed before" in out and f"batch {batch_id}" in out
    assert _stored(system, batch_id) == first
    [announced] = consume(kafka_bootstrap, topics.batches.name, 1)
    closed = BatchClosed.model_validate_json(announced.value())
    assert (closed.batch_id, closed.close_reason, closed.session_count) == (batch_id, "replay", len(first))
    [message] = consume(kafka_bootstrap, topics.commands.name, 1)
    command = parse_task_command(message.value())
    assert isinstance(command, ReplayBatch)
    assert (command.batch_id, command.idempotency_key) == (batch_id, f"batch:{batch_id}")

    # And read once more from scratch into another store where a replay was cut short (its batch open,
    # one session in): the batch is completed, with identical sessions, row for row.
    other = tmp_path / "other.db"
    with SqliteSessionStore(other) as store:
        store.open_batch(batch_id, start)
        store.put_sessions(batch_id, [next(iter(first.values()))])
        result = replay_range(bootstrap=kafka_bootstrap, replay_range=ReplayRange(topics.clickstream.name, start, end),
                              store=store, rules=RULES, max_event_bytes=1 << 20, max_sessions=MAX_SESSIONS)
    assert not result.reused and [b.batch_id for b in result.batches] == [batch_id]
    assert result.stats.invalid_events == 3 and result.stats.sessions == len(first)
    assert result.added == len(first) - 1 and result.batches[0].session_count == len(first)
    assert _stored(other, batch_id) == first


def test_a_range_without_sessions_stores_nothing(system: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--from-time=-1m", "--no-train"]) == 1
    assert "nothing stored" in capsys.readouterr().out
    with SqliteSessionStore(system) as store:
        assert store.list_batches() == []


def test_an_empty_range_is_refused(system: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--from-time", "2026-01-02T00:00:00", "--to-time", "2026-01-01T00:00:00"]) == 2
    assert "the range is empty" in capsys.readouterr().err


def test_sessions_do_not_depend_on_how_partitions_interleave_or_reads_are_chunked() -> None:
    sessions = list(emulate_sessions(30, seed=11, session_prefix="p"))
    records = []
    for number, events in enumerate(sessions):
        partition = number % 4
        for event in events:
            records.append((partition, event.session_id, event.model_dump_json().encode()))
    records.append((1, "p-000002", b"[]"))
    closes_at = datetime(2026, 1, 2, tzinfo=timezone.utc)

    def run(order: list, chunk: int) -> list[dict]:
        sessionizer = RangeSessionizer(RULES, 1 << 20, "replay-x", closes_at)
        offsets: dict[int, int] = {}
        numbered = []
        for partition, key, value in order:
            offsets[partition] = offsets.get(partition, -1) + 1
            numbered.append((partition, offsets[partition], key.encode(), value))
        closed = []
        for i in range(0, len(numbered), chunk):
            closed += sessionizer.feed(numbered[i:i + chunk])
        closed += sessionizer.finish()
        assert sessionizer.stats.invalid_events == 1
        return sorted((json.loads(s.model_dump_json()) for s in closed), key=lambda s: s["session_id"])

    reference = run(records, len(records))
    assert len(reference) == 30
    by_partition = {p: [r for r in records if r[0] == p] for p in range(4)}
    one_after_another = [r for p in (3, 2, 1, 0) for r in by_partition[p]]
    rng = random.Random(1)
    queues = {p: list(rs) for p, rs in by_partition.items()}
    mixed = []  # a random interleaving; each partition keeps its own order, as a consumer delivers it
    while any(queues.values()):
        mixed.append(queues[rng.choice([p for p, q in queues.items() if q])].pop(0))
    for order, chunk in ((one_after_another, 50), (mixed, 1), (mixed, 7)):
        assert run(order, chunk) == reference


def test_replay_session_ids_stay_within_the_identifier_limit() -> None:
    long_id = "s" * 256
    replayed = replay_session_id(long_id, "replay-0123456789abcdef0123")
    assert len(replayed) <= 256 and replayed.endswith("@replay-0123456789abcdef0123")
    assert replay_session_id("abc", "replay-1") == "abc@replay-1"
    assert original_session_id("abc@replay-1") == "abc"


def test_the_range_id_names_the_topic_range_rules_and_batch_size() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    span = ReplayRange("es.clickstream.events", t0, t0 + timedelta(hours=1))
    named = span.range_id(RULES, 1 << 20, 100)
    assert named == ReplayRange("es.clickstream.events", t0, t0 + timedelta(hours=1)).range_id(RULES, 1 << 20, 100)
    assert named != ReplayRange("es.clickstream.events", t0, t0 + timedelta(hours=2)).range_id(RULES, 1 << 20, 100)
    assert named != span.range_id(SessionRules(gap=timedelta(minutes=5)), 1 << 20, 100)
    assert named != span.range_id(RULES, 1 << 20, 101)
    assert named.startswith("replay-")
    assert part_batch_id(named, 2) == f"{named}-p2" != part_batch_id(named, 1)


def test_a_range_larger_than_a_batch_becomes_batches_of_at_most_the_batch_size_the_same_every_time(
    system: Path, topics: TopicRegistry, kafka_bootstrap: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = list(emulate_sessions(23, seed=21, session_prefix="big"))
    with ClickstreamProducer(kafka_bootstrap, topics) as producer:
        start = _pause()
        producer.send_many([e for s in sessions for e in s])
        producer.flush()
        end = _pause()
    monkeypatch.setenv("ES_BATCH_MAX_SESSIONS", "10")
    argv = ["replay", "--from-time", start.isoformat(), "--to-time", end.isoformat()]
    assert main(argv) == 0
    out = capsys.readouterr().out
    range_id = ReplayRange(topics.clickstream.name, start, end).range_id(RULES, 1 << 20, 10)
    ids = [part_batch_id(range_id, part) for part in (1, 2, 3)]
    for batch_id, count in zip(ids, (10, 10, 3)):
        assert f"batch {batch_id}: {count} session(s) stored, closed (replay)" in out
    assert part_batch_id(range_id, 4) not in out

    with SqliteSessionStore(system) as store:
        assert sorted((b.batch_id, b.session_count, b.status) for b in store.list_batches()) == [
            (i, n, BatchStatus.closed) for i, n in zip(ids, (10, 10, 3))]
    parts = [_stored(system, batch_id) for batch_id in ids]
    every = [original_session_id(i) for part in parts for i in part]
    assert sorted(every) == sorted(s[0].session_id for s in sessions)  # each session in exactly one batch
    # Cut in the sessions' own order: every session of a part starts no later than any of the next part.
    starts = [[(s.created_at, s.session_id) for s in part.values()] for part in parts]
    assert all(max(a) <= min(b) for a, b in zip(starts, starts[1:]))

    # One announcement and one task command per batch, each keyed by its batch.
    announced = [BatchClosed.model_validate_json(m.value()) for m in consume(kafka_bootstrap, topics.batches.name, 3)]
    assert sorted((a.batch_id, a.session_count) for a in announced) == sorted(zip(ids, (10, 10, 3)))
    commands = [parse_task_command(m.value()) for m in consume(kafka_bootstrap, topics.commands.name, 3)]
    assert sorted((c.batch_id, c.idempotency_key) for c in commands) == sorted((i, f"batch:{i}") for i in ids)

    # Replayed into a fresh store: the same batches, session for session.
    with SqliteSessionStore(tmp_path / "again.db") as store:
        result = replay_range(bootstrap=kafka_bootstrap, replay_range=ReplayRange(topics.clickstream.name, start, end),
                              store=store, rules=RULES, max_event_bytes=1 << 20, max_sessions=10, chunk=7)
    assert [b.batch_id for b in result.batches] == ids and result.added == 23
    assert [_stored(tmp_path / "again.db", batch_id) for batch_id in ids] == parts
    # And again into the first store: found complete, reused, nothing written.
    with SqliteSessionStore(system) as store:
        result = replay_range(bootstrap=kafka_bootstrap, replay_range=ReplayRange(topics.clickstream.name, start, end),
                              store=store, rules=RULES, max_event_bytes=1 << 20, max_sessions=10)
    assert result.reused and [b.batch_id for b in result.batches] == ids and result.added == 0


def test_the_live_open_batch_stays_the_store_s_open_batch(tmp_path: Path) -> None:
    """Cassandra's rule, on SQLite: the open batch is the one opened last. A replay opens its own
    batch, so afterwards the store must point at the batcher's open batch again."""

    class OpenedLast(SqliteSessionStore):
        pointer: str | None = None

        def open_batch(self, batch_id, opened_at):
            record = super().open_batch(batch_id, opened_at)
            if record.status is BatchStatus.open:
                self.pointer = batch_id
            return record

        def get_open_batch(self):
            record = self.get_batch(self.pointer) if self.pointer else None
            return record if record is not None and record.status is BatchStatus.open else None

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with OpenedLast(tmp_path / "s.db") as store:
        store.open_batch("b-live", t0)
        session = RangeSessionizer(RULES, 1 << 20, "replay-1", t0)
        closed = session.feed([(0, 0, b"s1", next(emulate_sessions(1))[0].model_dump_json().replace(
            '"session-000000"', '"s1"').encode())]) + session.finish()
        record, added = write_batch(store, "replay-1", t0, closed)
        assert (record.status, record.close_reason, added) == (BatchStatus.closed, "replay", 1)
        assert store.get_open_batch().batch_id == "b-live"
