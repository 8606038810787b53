"""The stream worker: a Faust app built from settings, in the order the data flows.

    clickstream ──▶ sessionizer ──▶ sessions ──▶ batcher ──▶ store, then batches (BatchClosed)
    commands ──(release_batch)──────────▲   ▲
    age timer ──(age_check)─────────────────┘

- ``sessionizer``: raw events in batches, sessions closed by end, gap, idle time or length
  (``SessionizerService`` runs ``sessionizer_loop.SessionizerLoop`` in ``sessionizer_processes``
  processes of its own, because a Faust stream hands over one record at a time: see that module);
- ``batcher``: the one agent that changes the open batch; announces every batch it closes;
- ``commands``: forwards ``release_batch`` commands to the batcher, dead-letters unreadable ones;
- ``age_check``: a timer asking the batcher, through its own topic, whether the batch is too old.

Nothing connects at import time: ``create_app`` builds the app; ``StreamProcessors.run`` starts it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import faust
from mode import Service

from schemas.base import ContractError, utc_now
from schemas.sessions import BatchRecord, BatchStatus
from schemas.settings import Settings
from schemas.tasks import ReleaseBatch, parse_task_command
from session_store.base import SessionStore, StaleBatcher
from schemas.faults import crash_point
from stream_processors.announcements import batch_closed
from stream_processors.batcher import Batcher
from schemas.dead_letters import dead_letter_headers
from stream_processors.gc_pause import gc_paused
from stream_processors.metrics import StreamMetrics
from stream_processors.records import (
    BATCHER_KEY,
    AgeCheck,
    ReleaseRequested,
    SessionsClosed,
    encode,
    parse_batcher_input,
)
from stream_processors.sessionizer_loop import SessionizerLoop
from stream_processors.sessionizer_process import build_sessionizer, run_child, stop_children

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StreamProcessors:
    """The Faust app and the parts it runs, for the CLI, the embedded runtime, tests and benches."""

    app: faust.App
    sessionizers: "SessionizerService"
    batcher: Batcher
    metrics: StreamMetrics

    def run(self, loglevel: str = "INFO") -> None:
        """Run the worker in this (main) thread until a signal stops it; raises if it crashed."""
        from faust.worker import Worker

        from observability.logs import faust_logging_config

        worker = Worker(self.app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                        logging_config=faust_logging_config())  # ES_LOG_FORMAT
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise


def create_app(
    settings: Settings,
    store: SessionStore,
    *,
    bootstrap: str | None = None,
    app_id: str | None = None,
    metrics_interval_s: float = 30.0,
    **faust_options: Any,
) -> StreamProcessors:
    """Build the stream worker. ``bootstrap`` defaults to ``settings.kafka_bootstrap`` (the embedded
    runtime passes the broker it started); ``faust_options`` override the app's settings.

    ``store`` serves the batcher. Sessionizer processes open ``settings.resolved_store_url()``
    themselves (a store object cannot cross a process boundary), so the two must name the same
    store; with ``settings.sessionizer_processes == 0`` everything uses ``store``."""
    bootstrap = bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        raise ValueError("the stream worker needs a Kafka bootstrap (ES_KAFKA_BOOTSTRAP)")
    topics = settings.topics()
    app_id = app_id or f"{topics.prefix}.stream-processors"
    metrics = StreamMetrics()
    faust_dir = Path(settings.data_dir) / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level

    options: dict[str, Any] = dict(
        broker=[f"kafka://{host.strip()}" for host in bootstrap.split(",")],
        store="memory://",  # no tables: the working state lives in the session store
        processing_guarantee="at_least_once",
        autodiscover=False,
        web_enabled=False,  # several workers on one machine must not fight over a port
        topic_allow_declare=False,  # topics are created up front with their partition counts
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.stream_session_timeout_s,
        broker_heartbeat_interval=settings.stream_heartbeat_interval_s,
        consumer_max_fetch_size=16 << 20,  # a sessions record may carry a big search
        producer_max_request_size=16 << 20,
        datadir=str(faust_dir / "{conf.name}"),
    )
    app = faust.App(app_id, **{**options, **faust_options})

    def raw_topic(name: str, partitions: int) -> faust.TopicT:
        # Raw bytes both ways: keys must hash exactly as the producers' partitioner hashed them.
        return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)

    sessions_topic = raw_topic(topics.sessions.name, topics.sessions.partitions)
    commands_topic = raw_topic(topics.commands.name, topics.commands.partitions)
    commands_dlq = raw_topic(topics.commands_dlq.name, topics.commands_dlq.partitions)
    batches_topic = raw_topic(topics.batches.name, topics.batches.partitions)

    sessionizers = SessionizerService(settings, store, bootstrap, f"{app_id}.sessionizer", metrics, app)
    app.add_dependency(sessionizers)

    batcher = Batcher(
        store, max_sessions=settings.batch_max_sessions, max_age=timedelta(seconds=settings.batch_max_age_s),
        counters=metrics.batcher,
    )
    # The batcher's store calls run on one thread of their own, off the event loop.
    store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher-store")
    owner = _PartitionOwnership()

    async def in_store_thread(fun: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(store_thread, fun, *args)

    async def announce(record: BatchRecord) -> None:
        closed = batch_closed(record)
        sent = await batches_topic.send(key=closed.batch_id.encode(), value=closed.model_dump_json().encode(), force=True)
        await sent  # acknowledged: only now may the store say so
        crash_point("batcher.announce")
        await in_store_thread(store.mark_announced, closed.batch_id, utc_now())
        metrics.batcher["batches_announced"] += 1
        log.info("announced batch %s (%d sessions, %s)", closed.batch_id, closed.session_count, closed.close_reason,
                 extra={"batch_id": closed.batch_id})

    async def take_over() -> None:
        """This worker now owns the open batch: pick it up, and announce what a crash left unsaid."""
        await in_store_thread(batcher.resume)  # stale open batches it closes are announced just below
        # Exactly the closed batches the store has not marked announced: a crash between the
        # close and the broker's ack, or between the ack and the mark (then the same key and
        # value go out again, and compaction keeps one).
        for record in await in_store_thread(store.list_unannounced):
            if record.close_reason == "replay":
                # `replay` announces its own batch (or, with --no-train, on purpose not at all).
                await in_store_thread(store.mark_announced, record.batch_id, utc_now())
                continue
            log.warning("batch %s was closed but not marked announced (a crash?); announcing it now", record.batch_id)
            await announce(record)
        owner.ready = True

    @app.agent(sessions_topic, concurrency=1)
    async def batcher_agent(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            if not owner.ready:
                await take_over()
            try:
                record = parse_batcher_input(value)
            except (ValueError, KeyError, TypeError) as error:  # our own topic: a bug or a foreign writer
                log.error("unreadable record on %s skipped: %s", topics.sessions.name, error)
                continue
            now = utc_now()
            try:
                if isinstance(record, SessionsClosed):
                    closed = await in_store_thread(_paused(batcher.add), record.sessions, now)
                elif isinstance(record, ReleaseRequested):
                    closed = await in_store_thread(batcher.release, record.release_id, now)
                else:
                    closed = await in_store_thread(batcher.check_age, now)
                if closed:
                    crash_point("batcher.batch_close")
                for batch in closed:
                    await announce(batch)
            except StaleBatcher:
                # Another worker took the batch over during a rebalance: this one must not write;
                # it takes over again (with a newer epoch) if the partition comes back.
                log.warning("a newer batcher owns the batch; this worker stops writing to it")
                owner.ready = False
                continue
            except Exception as error:
                # The store or the broker failed: stop the worker rather than ack what was not done;
                # a restart replays from the last committed offset.
                log.critical("batcher failed: %r", error)
                await app.crash(error)
                raise

    @app.agent(commands_topic, concurrency=1)
    async def commands_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                command = parse_task_command(message.value or b"")
            except Exception as error:  # nothing an operator sends may stop the worker
                reason = error.reason if isinstance(error, ContractError) else f"{type(error).__name__}: {error}"
                metrics.batcher["commands_dead_lettered"] += 1
                headers = dead_letter_headers(reason, message.topic, message.partition, message.offset)
                sent = await commands_dlq.send(key=message.key, value=message.value, headers=headers, force=True)
                await sent
                continue
            if isinstance(command, ReleaseBatch):
                metrics.batcher["releases_received"] += 1
                forward = ReleaseRequested(
                    release_id=command.release_id, command_id=command.command_id, requested_at=utc_now()
                )
                sent = await sessions_topic.send(key=BATCHER_KEY, value=encode(forward), force=True)
                await sent
            # Every other command is the trainer's.

    @app.on_partitions_revoked.connect
    async def on_revoked(app_: faust.App, revoked: set, **_: Any) -> None:
        if any(tp.topic == topics.sessions.name for tp in revoked):
            owner.ready = False  # another worker may change the batch meanwhile: re-read it on return

    @app.on_partitions_assigned.connect
    async def on_assigned(app_: faust.App, assigned: set, **_: Any) -> None:
        if any(tp.topic == topics.sessions.name for tp in assigned):
            # Wake the batcher now rather than at the next record, so that it takes over (and
            # announces what a crashed predecessor left unannounced) even with no traffic.
            # Not awaited here: the rebalance must not wait for the broker.
            asyncio.ensure_future(send_age_check())

    age_interval = min(max(settings.batch_max_age_s / 4, 0.1), 10.0)

    async def send_age_check() -> None:
        sent = await sessions_topic.send(key=BATCHER_KEY, value=encode(AgeCheck(sent_at=utc_now())), force=True)
        await sent

    @app.timer(age_interval)
    async def age_check() -> None:
        # Sent from every worker; the batcher alone decides. Also wakes a new owner of the sessions
        # partition, so that it announces what a crashed one left unannounced even with no traffic.
        await send_age_check()

    @app.timer(metrics_interval_s)
    async def log_metrics() -> None:
        metrics.log()

    return StreamProcessors(app=app, sessionizers=sessionizers, batcher=batcher, metrics=metrics)


def _paused(fun: Callable[..., T]) -> Callable[..., T]:
    def call(*args: Any) -> T:
        with gc_paused():
            return fun(*args)

    return call


class _PartitionOwnership:
    ready = False


class SessionizerService(Service):
    """The sessionizer loops, started and stopped with the Faust app: ``sessionizer_processes``
    child processes, or (0) one thread in this process using the worker's own store object. If a
    loop fails (store or broker trouble, never bad input) the whole worker stops with the error."""

    def __init__(self, settings: Settings, store: SessionStore, bootstrap: str, group_id: str,
                 metrics: StreamMetrics, app: faust.App, **kwargs: Any) -> None:
        self.settings = settings
        self.store = store
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.metrics = metrics
        self.faust_app = app
        self.loop_in_thread: SessionizerLoop | None = None
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._thread_done: asyncio.Future | None = None
        self._stopping = False
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        count = self.settings.sessionizer_processes
        if count == 0:
            self._start_thread()
            return
        # spawn, not fork: the parent runs an event loop and librdkafka threads that a fork would copy.
        context = multiprocessing.get_context("spawn")
        for number in range(1, count + 1):
            process = context.Process(
                target=run_child, name=f"sessionizer-{number}", daemon=True,
                args=(self.settings, self.bootstrap, self.group_id, number, self.settings.log_level.upper()),
            )
            process.start()
            self.processes.append(process)
            self.add_future(self._watch_process(process))
        log.info("started %d sessionizer process(es): %s", count, [p.pid for p in self.processes])

    def _start_thread(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        self._thread_done = done
        sessionizer = self.loop_in_thread = build_sessionizer(
            self.settings, self.store, self.bootstrap, self.group_id, self.metrics
        )

        def run() -> None:
            error: BaseException | None = None
            try:
                sessionizer.run()
            except BaseException as exc:  # handed to the event loop, which decides
                error = exc
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(error))

        threading.Thread(target=run, name="sessionizer", daemon=True).start()
        self.add_future(self._watch_thread(done))

    async def _watch_thread(self, done: asyncio.Future) -> None:
        error = await asyncio.shield(done)
        if error is not None and not self._stopping:
            await self._fail(error)

    async def _watch_process(self, process: multiprocessing.process.BaseProcess) -> None:
        # The sentinel becomes readable when the process ends: no thread sits blocked in join(),
        # which would hold up this process's own exit.
        loop = asyncio.get_running_loop()
        ended: asyncio.Future = loop.create_future()
        loop.add_reader(process.sentinel, lambda: ended.done() or ended.set_result(None))
        try:
            await ended
        finally:
            loop.remove_reader(process.sentinel)
        process.join(0)
        if not self._stopping:
            await self._fail(RuntimeError(f"sessionizer process {process.pid} exited with code {process.exitcode}"))

    async def _fail(self, error: BaseException) -> None:
        log.critical("sessionizer failed: %r", error)
        self.metrics.log()
        await self.faust_app.crash(error)

    async def on_stop(self) -> None:
        self._stopping = True
        if self.loop_in_thread is not None:
            self.loop_in_thread.stop()
            if self._thread_done is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._thread_done), timeout=30)
                except asyncio.TimeoutError:
                    log.error("the sessionizer thread did not stop within 30 s")
        if self.processes:
            await asyncio.get_running_loop().run_in_executor(None, stop_children, self.processes)
        self.metrics.log()
