"""The sessionizer loops as a service of the Faust app, started and stopped with it.

``sessionizer_processes`` child processes (spawned, each a ``sessionizer_loop.SessionizerLoop`` on
its share of the clickstream partitions), or (0) one thread in the worker's process using its own
store object. If a loop fails (store or broker trouble, never bad input) the whole worker stops
with the error.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from typing import Any

import faust
from mode import Service

from messaging import KafkaCluster
from schemas.settings import Settings
from session_store.base import SessionStore
from stream_processors.counters import StreamCounters
from stream_processors.sessionizer_loop import SessionizerLoop
from stream_processors.sessionizer_process import build_sessionizer, run_child, stop_children

log = logging.getLogger(__name__)


class SessionizerService(Service):
    """The sessionizer loops, started and stopped with the Faust app: ``sessionizer_processes``
    child processes, or (0) one thread in this process using the worker's own store object. If a
    loop fails (store or broker trouble, never bad input) the whole worker stops with the error."""

    def __init__(self, settings: Settings, store: SessionStore, bootstrap: KafkaCluster | str, group_id: str,
                 metrics: StreamCounters, app: faust.App, **kwargs: Any) -> None:
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
