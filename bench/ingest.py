"""Ingest: raw clickstream to sessions durable in the embedded SQLite store, through one worker.

Figures (a tansu broker on 127.0.0.1, 8 clickstream partitions, one ``embedding-studio worker``
with its default settings — a Faust process and ``sessionizer_processes`` sessionizer processes —
and the SQLite store):

- ``ingest_events_per_s``: steady-state rate. All events are produced up front (a backlog, like a
  worker catching up), then the worker starts; the rate is counted while the last 80% of the
  sessions become durable in the store, so the process start and the group joins and rebalances of
  the first seconds (seconds on tansu) are left out. ``ingest_wall_s`` is the whole run, from
  worker start to the last session durable.
  Every emulated session ends with an explicit ``session_end``, so nothing waits for the gap.
- ``faust_take_events_per_s``: the same events through the best Faust agent we could write with
  the same rules and store: ``take_events`` batches, one store read and one write per batch
  (``bench/naive_faust.py``), for ``naive_seconds``; ``ingest_to_faust_ratio`` is the ratio.
- ``rss_mb`` / ``open_sessions``: the resident memory of the worker's processes (the Faust process
  and its sessionizer processes) once they hold ``open_sessions`` sessions that stay open. The open
  sessions live in the store, so there is no per-session memory cost to report (an earlier
  per-session figure was noise around zero and is gone).
- ``sdk_produce_events_per_s`` / ``sdk_bytes_produce_events_per_s`` / ``raw_produce_events_per_s``:
  the same events produced by the SDK from contract instances, by the SDK from JSON bytes
  (validated once on pydantic-core's JSON path and sent as they came), and by a plain
  confluent-kafka producer of the pre-serialised bytes with the same settings, in the same run,
  to a topic of their own; ``sdk_to_raw_produce`` is the SDK's share of the raw rate. The
  ``*_per_cpu_s`` figures divide by this process's CPU time instead of wall time: events per
  second of one core, less disturbed when other work shares the machine.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from embedding_studio.embedded.broker import TansuBroker
from messaging.topics import ensure_topics
from simulation.emulator import emulate_sessions
from ingest.producer import ClickstreamProducer
from schemas.base import utc_now
from schemas.clickstream import SessionEnd
from schemas.settings import Settings
from schemas.topics import TopicRegistry
from bench.processes import es_env, spawn, stop, tree_rss_bytes, worker_command

Figure = tuple[str, object]


def bench_ingest(
    events: int = 300_000, open_sessions: int = 100_000, naive_seconds: float = 20.0, timeout_s: float = 120.0
) -> Iterator[Figure]:
    with tempfile.TemporaryDirectory(prefix="es-bench-ingest-") as tmp, \
            TansuBroker(log_path=Path(tmp) / "broker.log") as broker:
        workdir = Path(tmp)
        topics = TopicRegistry(prefix=f"bench{uuid.uuid4().hex[:8]}", clickstream_partitions=8)
        ensure_topics(broker.bootstrap, topics)

        sessions = _ended_sessions(events)
        sent = sum(len(s) for s in sessions)
        started = time.monotonic()
        _produce(broker.bootstrap, topics, sessions)
        session_count = len(sessions)
        produce_rates = list(_produce_rates(broker.bootstrap, sessions))  # before the worker competes for the cores
        del sessions  # a few hundred MB of events this process need not keep
        yield "ingest_events", sent
        yield "ingest_sessions", session_count
        yield "produce_events_per_s", sent / (time.monotonic() - started)
        yield from produce_rates

        defaults = Settings()  # what the worker runs with, ES_* variables of this shell included
        yield "sessionizer_processes", defaults.sessionizer_processes
        yield "sessionizer_batch_events", defaults.sessionizer_batch_events
        store_path = workdir / "sessions.db"
        env = es_env(broker.bootstrap, topics, workdir, store_url=f"sqlite:///{store_path}",
                     session_gap_s=3600, batch_max_sessions=10_000)
        worker = spawn(worker_command(), env, workdir / "worker.log")
        try:
            probe = _StoreProbe(store_path)
            rate, wall = _time_until_stored(worker, probe, session_count, sent, timeout_s, workdir)
            yield "ingest_events_per_s", rate
            yield "ingest_wall_s", wall

            # Two equal waves of open sessions: the growth over the second one is what holding more
            # open sessions costs, once the working set of such batches is reached in the first.
            _produce(broker.bootstrap, topics, _open_searches(open_sessions, seed=43))
            _wait_open(worker, probe, open_sessions, timeout_s, workdir)
            time.sleep(1.0)  # let the last batch's buffers go
            yield "open_sessions", open_sessions
            yield "rss_mb", tree_rss_bytes(worker.pid) / 2**20
        finally:
            stop(worker)

        naive = _naive_faust(broker.bootstrap, topics, workdir, naive_seconds)
        yield "faust_take_events_per_s", naive
        yield "ingest_to_faust_ratio", rate / naive if naive else float("nan")


def bench_produce(events: int = 150_000) -> Iterator[Figure]:
    """Only the producer figures (seconds rather than the minute of ``bench_ingest``): the SDK
    against plain confluent-kafka, same events, same broker, same run."""
    with tempfile.TemporaryDirectory(prefix="es-bench-produce-") as tmp, \
            TansuBroker(log_path=Path(tmp) / "broker.log") as broker:
        yield from _produce_rates(broker.bootstrap, _ended_sessions(events), limit=events)


def _produce_rates(bootstrap: str, sessions: list[list], limit: int = 150_000) -> Iterator[Figure]:
    """SDK produce against plain confluent-kafka produce of the same events, same settings."""
    from confluent_kafka import Producer

    from ingest.partitioner import KAFKA_PARTITIONER

    events = [e for session in sessions for e in session][:limit]
    blobs = [e.model_dump_json().encode() for e in events]
    keys = [e.session_id.encode() for e in events]
    topics = TopicRegistry(prefix=f"benchp{uuid.uuid4().hex[:8]}", clickstream_partitions=8)
    ensure_topics(bootstrap, topics)
    config = {"linger.ms": 20}

    def sdk(values: list) -> None:
        with ClickstreamProducer(bootstrap, topics, config=config) as producer:
            producer.send_many(values)
            producer.flush(120)

    def raw() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                             "partitioner": KAFKA_PARTITIONER, "linger.ms": 20, "message.timeout.ms": 120_000})
        for index, (key, value) in enumerate(zip(keys, blobs)):
            while True:
                try:
                    producer.produce(topics.clickstream.name, value=value, key=key)
                    break
                except BufferError:
                    producer.poll(0.05)
            if index % 1000 == 0:
                producer.poll(0)
        assert producer.flush(120) == 0

    sdk_wall, sdk_cpu = _timed(lambda: sdk(events))
    bytes_wall, bytes_cpu = _timed(lambda: sdk(blobs))
    raw_wall, raw_cpu = _timed(raw)
    count = len(events)
    yield "sdk_produce_events", count
    yield "sdk_produce_events_per_s", count / sdk_wall
    yield "sdk_bytes_produce_events_per_s", count / bytes_wall
    yield "raw_produce_events_per_s", count / raw_wall
    yield "sdk_to_raw_produce", raw_wall / sdk_wall
    yield "sdk_bytes_to_raw_produce", raw_wall / bytes_wall
    # Per CPU-second of this process (its librdkafka threads included; the broker is another
    # process): what a core spent, whatever else shared the machine while it ran.
    yield "sdk_produce_events_per_cpu_s", count / sdk_cpu
    yield "sdk_bytes_produce_events_per_cpu_s", count / bytes_cpu
    yield "raw_produce_events_per_cpu_s", count / raw_cpu
    yield "sdk_to_raw_produce_cpu", raw_cpu / sdk_cpu


def _timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) that ``run()`` took."""
    wall, cpu = time.monotonic(), time.process_time()
    run()
    return time.monotonic() - wall, time.process_time() - cpu


def _ended_sessions(events: int) -> list[list]:
    """Emulated sessions stamped now, each closed by an explicit end, about ``events`` events in all."""
    now = utc_now()
    out: list[list] = []
    total = 0
    for session in emulate_sessions(events // 3, seed=42, session_prefix=f"s{uuid.uuid4().hex[:6]}"):
        session = [e.model_copy(update={"created_at": now}) for e in session]
        if not isinstance(session[-1], SessionEnd):
            session.append(SessionEnd(session_id=session[0].session_id, created_at=now))
        out.append(session)
        total += len(session)
        if total >= events:
            break
    return out


def _open_searches(count: int, seed: int) -> Iterator[list]:
    now = utc_now()
    for session in emulate_sessions(count, seed=seed, session_prefix=f"open{uuid.uuid4().hex[:6]}"):
        yield [session[0].model_copy(update={"created_at": now})]


def _produce(bootstrap: str, topics: TopicRegistry, sessions) -> None:
    with ClickstreamProducer(bootstrap, topics, config={"linger.ms": 20}) as producer:
        for session in sessions:
            producer.send_many(session)
        producer.flush(120)


class _StoreProbe:
    """Cheap looks into the worker's store from outside: one read-only connection, and the
    sessions' largest rowid as their count (rows are only ever inserted), so that watching the
    worker does not take CPU from it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _query(self, sql: str) -> int:
        if self._db is None:
            if not self.path.exists():
                return 0
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            return self._db.execute(sql).fetchone()[0] or 0
        except sqlite3.OperationalError:  # the worker has not created its tables yet
            return 0

    def sessions(self) -> int:
        return self._query("SELECT MAX(rowid) FROM sessions")

    def open_sessions(self) -> int:
        return self._query("SELECT COUNT(*) FROM open_sessions WHERE closed_us IS NULL")


def _time_until_stored(worker, probe: _StoreProbe, sessions: int, events: int, timeout_s: float,
                       workdir: Path) -> tuple[float, float]:
    """(events/s while the last 80% of sessions became durable, seconds from worker start to all)."""
    started = time.monotonic()
    mark_at: float | None = None
    mark_count = 0
    while True:
        count = probe.sessions()
        now = time.monotonic()
        if mark_at is None and count >= sessions // 5:
            mark_at, mark_count = now, count
        if count >= sessions:
            break
        _check(worker, started, timeout_s, workdir, f"{count} of {sessions} sessions stored")
        time.sleep(0.1)
    assert mark_at is not None
    stored_events = (count - mark_count) * events / sessions
    rate = stored_events / (now - mark_at) if now > mark_at else float("nan")
    return rate, now - started


def _wait_open(worker, probe: _StoreProbe, expected: int, timeout_s: float, workdir: Path) -> None:
    started = time.monotonic()
    while (count := probe.open_sessions()) < expected:
        _check(worker, started, timeout_s, workdir, f"{count} of {expected} open sessions held")
        time.sleep(0.5)


def _check(worker, started: float, timeout_s: float, workdir: Path, progress: str) -> None:
    if worker.poll() is not None or time.monotonic() - started > timeout_s:
        log = (workdir / "worker.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"worker {'exited' if worker.poll() is not None else 'too slow'}: {progress}\n{log}")


def _naive_faust(bootstrap: str, topics: TopicRegistry, workdir: Path, seconds: float) -> float:
    result = workdir / "naive.json"
    env = es_env(bootstrap, topics, workdir, store_url=f"sqlite:///{workdir / 'naive.db'}", session_gap_s=3600)
    env["BENCH_RESULT"] = str(result)
    env["BENCH_SECONDS"] = str(seconds)
    process = spawn([sys.executable, "-m", "bench.naive_faust"], env, workdir / "naive.log")
    try:
        process.wait(seconds + 60)
    finally:
        stop(process)
    if not result.exists():
        raise RuntimeError("the naive Faust agent reported nothing:\n"
                           + (workdir / "naive.log").read_text(errors="replace")[-3000:])
    figures = json.loads(result.read_text())
    return figures["events"] / figures["seconds"]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.run import _format

    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="`make bench` runs bench_ingest through bench.run; the README's ingest figures come from "
        "`python -m bench.run --only bench.ingest:bench_ingest > bench/results/ingest.txt`.",
    )
    parser.add_argument("--produce-only", action="store_true",
                        help="only the producer figures (sdk_*, raw_produce_*), without the worker")
    parser.add_argument("--events", type=int, default=None,
                        help="events to send (default: 300,000 for the whole bench, 150,000 with --produce-only)")
    args = parser.parse_args(argv)
    if args.produce_only:
        figures = bench_produce(args.events or 150_000)
    else:
        figures = bench_ingest(args.events or 300_000)
    for name, value in figures:
        print(f"{name}: {_format(value)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
