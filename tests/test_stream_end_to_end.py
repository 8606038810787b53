"""The stream worker as it runs in production: a real broker, a real worker process, the SDK's
producer upstream and the SQLite store downstream.

Sessions sent through the SDK end up stored, in batches, and every closed batch is announced on the
batches topic once its sessions are durable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from simulation.emulator import emulate_sessions
from ingest.producer import ClickstreamProducer
from schemas.base import utc_now
from schemas.batches import BatchClosed
from schemas.clickstream import Interaction, SessionEnd
from schemas.sessions import BatchStatus
from schemas.topics import TopicRegistry
from session_store.sqlite_store import SqliteSessionStore
from schemas.dead_letters import read_dead_letter
from tests.fixtures.broker import consume, consume_all

T = TypeVar("T")

# Group joins on tansu are held for about half the session timeout: keep both short.
FAST_GROUPS = {"ES_STREAM_SESSION_TIMEOUT_S": "2", "ES_STREAM_HEARTBEAT_INTERVAL_S": "0.5"}


class WorkerProcess:
    """``embedding-studio worker`` in a process of its own, configured only through ES_* variables."""

    def __init__(self, bootstrap: str, topics: TopicRegistry, workdir: Path, **settings: object) -> None:
        self.workdir = workdir
        self.store_path = workdir / "sessions.db"
        self.log_path = workdir / "worker.log"
        self.env = {
            **os.environ,
            "ES_KAFKA_BOOTSTRAP": bootstrap,
            "ES_TOPIC_PREFIX": topics.prefix,
            "ES_CLICKSTREAM_PARTITIONS": str(topics.clickstream_partitions),
            "ES_STORE_URL": f"sqlite:///{self.store_path}",
            "ES_DATA_DIR": str(workdir / "data"),
            "ES_LOG_LEVEL": "INFO",
            **FAST_GROUPS,
            "ES_SESSIONIZER_PROCESSES": "1",
            **{f"ES_{name.upper()}": str(value) for name, value in settings.items()},
        }
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "WorkerProcess":
        self.starts += 1
        script = Path(sys.executable).with_name("embedding-studio")
        command = [str(script)] if script.exists() else [
            sys.executable, "-c", "import sys; from embedding_studio.cli import main; sys.exit(main())"]
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*command, "worker", "--no-topics"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the worker ignored SIGTERM for {timeout_s} s\n{self.log_tail()}")

    def assert_alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"the worker died\n{self.log_tail()}"

    def log_tail(self, size: int = 6000) -> str:
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace") if self.log_path.exists() else ""

    def store(self) -> SqliteSessionStore:
        return SqliteSessionStore(self.store_path)


@pytest.fixture
def worker_factory(kafka_bootstrap: str, topics: TopicRegistry, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def make(**settings: object) -> WorkerProcess:
        worker = WorkerProcess(kafka_bootstrap, topics, tmp_path, **settings)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        if worker.process is not None and worker.process.poll() is None:
            worker.kill()


def wait_for(what: str, probe: Callable[[], T], timeout_s: float, worker: WorkerProcess | None = None) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if worker is not None:
            worker.assert_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}"
                                 + (f"\n{worker.log_tail()}" if worker else ""))
        time.sleep(0.2)


def live_sessions(count: int, seed: int, prefix: str = "session") -> list[list]:
    """Emulated sessions stamped with the current time, as a live client would send them (the
    emulator's own clock spaces clicks seconds apart, which these tests' short gaps would split)."""
    now = utc_now()
    return [[e.model_copy(update={"created_at": now}) for e in events]
            for events in emulate_sessions(count, seed=seed, session_prefix=prefix)]


def stored_count(store: SqliteSessionStore) -> int:
    return sum(store.count_sessions(b.batch_id) for b in store.list_batches(limit=100_000))


def stored_session_ids(store: SqliteSessionStore) -> Counter[str]:
    """How many times each session is stored, over every batch (the store's public reads only)."""
    return Counter(s.session_id for b in store.list_batches(limit=100_000) for s in store.iter_sessions(b.batch_id))


def announcements(bootstrap: str, topics: TopicRegistry) -> list[BatchClosed]:
    return [BatchClosed.model_validate_json(m.value()) for m in consume_all(bootstrap, topics.batches.name, quiet_s=1.0)]


@pytest.mark.slow
def test_sessions_sent_with_the_sdk_are_stored_in_batches_and_each_batch_is_announced(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    worker = worker_factory(session_gap_s=1.5, batch_max_sessions=10).start()
    sessions = live_sessions(40, seed=7)
    with ClickstreamProducer(kafka_bootstrap, topics) as producer:
        for events in sessions:
            producer.send_many(events)
        producer.flush()

    store = worker.store()
    wait_for("40 stored sessions", lambda: stored_count(store) >= 40, 60, worker)
    closed = wait_for("4 announced batches", lambda: len(found := announcements(kafka_bootstrap, topics)) >= 4 and found,
                      30, worker)

    assert stored_session_ids(store) == Counter({events[0].session_id: 1 for events in sessions})
    for events in sessions:
        stored = store.get_session(events[0].session_id)
        clicks = [e for e in events if isinstance(e, Interaction)]
        assert [e.event_id for e in stored.events] == [c.event_id for c in clicks]
        assert stored.search_query == events[0].search_query
        assert stored.close_reason == ("end" if isinstance(events[-1], SessionEnd) else "gap")
    assert sorted(b.session_count for b in closed) == [10, 10, 10, 10]
    assert len({b.batch_id for b in closed}) == 4
    for announced in closed:
        record = store.get_batch(announced.batch_id)
        assert record.status is BatchStatus.closed and record.close_reason == "size"
        assert store.count_sessions(announced.batch_id) == announced.session_count
    assert worker.stop() == 0


@pytest.mark.slow
def test_late_events_go_to_the_late_topic_orphans_to_the_dead_letter_topic_and_old_batches_close(
    kafka_bootstrap: str, topics: TopicRegistry, worker_factory
):
    worker = worker_factory(session_gap_s=1.0, batch_max_sessions=1000, batch_max_age_s=2.0).start()
    (done,) = live_sessions(1, seed=1, prefix="ended")
    done = [e for e in done if not isinstance(e, SessionEnd)] + [SessionEnd(session_id="ended-000000")]
    orphan = Interaction(session_id="orphan-1", event_id="o-e1", object_id="item-0001")
    with ClickstreamProducer(kafka_bootstrap, topics) as producer:
        producer.send_many([*done, orphan])
        producer.flush()
        store = worker.store()
        wait_for("the ended session", lambda: store.get_session("ended-000000"), 60, worker)
        late = Interaction(session_id="ended-000000", event_id="too-late", object_id="item-0002")
        producer.send(late)
        producer.flush()

    (forwarded,) = consume(kafka_bootstrap, topics.clickstream_late.name, 1, timeout_s=30)
    assert forwarded.key() == b"ended-000000" and Interaction.model_validate_json(forwarded.value()) == late
    assert "too-late" not in {e.event_id for e in store.get_session("ended-000000").events}

    (dead,) = consume(kafka_bootstrap, topics.clickstream_dlq.name, 1, timeout_s=30)
    letter = read_dead_letter(dead.key(), dead.value(), dead.headers())
    assert letter.key == b"orphan-1" and "without a search" in letter.reason
    assert store.get_session("orphan-1") is None

    # One session in a batch that may only be 2 s old: the age check closes it.
    (closed,) = wait_for("the batch closed by age", lambda: announcements(kafka_bootstrap, topics), 30, worker)
    assert (closed.close_reason, closed.session_count) == ("age", 1)
    assert store.get_session("ended-000000").batch_id == closed.batch_id
    assert worker.stop() == 0
