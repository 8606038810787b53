"""Sessionizer loops in processes of their own, started and stopped with the worker.

Parsing and validating raw events is CPU work that holds Python's GIL, so one process tops out
at one core (~30 000 events/s here). A worker therefore runs ``sessionizer_processes`` loops as
child processes, members of one consumer group that share the clickstream partitions; the Faust
process keeps the batcher and the command path. With ``sessionizer_processes=0`` the loop runs on
a thread of the worker process instead, sharing the store object the worker was given (for stores
that cannot be opened again by URL).

A child never outlives its worker: it dies with it (Linux parent-death signal, and a watch on its
parent as a fallback) so that a killed worker's partitions move to the survivors instead of staying
with a headless child.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time

from observability.logs import configure_logging
from observability.stream import CounterFile
from messaging import KafkaCluster
from schemas.settings import Settings
from schemas.topics import TopicRegistry
from session_store.base import SessionStore
from session_store.factory import open_store
from stream_processors.counters import StreamCounters
from stream_processors.sessionizer import SessionRules
from stream_processors.sessionizer_loop import SessionizerLoop

log = logging.getLogger(__name__)


def build_sessionizer(
    settings: Settings, store: SessionStore, bootstrap: KafkaCluster | str, group_id: str,
    metrics: StreamCounters | None = None,
) -> SessionizerLoop:
    topics: TopicRegistry = settings.topics()
    return SessionizerLoop(
        bootstrap=bootstrap, topics=topics, store=store, group_id=group_id,
        rules=SessionRules.from_seconds(settings.session_gap_s, settings.session_max_events,
                                        settings.session_max_duration_s),
        max_event_bytes=settings.max_event_bytes, max_record_bytes=settings.max_record_bytes,
        max_attempts=settings.sessionizer_max_attempts, batch_events=settings.sessionizer_batch_events,
        tombstone_ttl_s=settings.session_tombstone_ttl_s, session_timeout_s=settings.stream_session_timeout_s,
        heartbeat_interval_s=settings.stream_heartbeat_interval_s, metrics=metrics,
    )


def run_child(settings: Settings, bootstrap: KafkaCluster | str, group_id: str, number: int, log_level: str) -> None:
    """Body of a sessionizer child process (a multiprocessing target)."""
    _die_with_parent()
    configure_logging(settings.model_copy(update={"log_level": log_level}), f"sessionizer-{number}")
    metrics = StreamCounters()
    store = open_store(settings.resolved_store_url())
    loop = build_sessionizer(settings, store, bootstrap, group_id, metrics)
    for signum in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C reaches the whole process group
        signal.signal(signum, lambda *_: loop.stop())
    parent = os.getppid()
    _watch_parent(parent, loop)
    reporter = threading.Thread(target=_report, args=(loop, metrics), daemon=True)
    reporter.start()
    CounterFile(settings.data_dir, number, metrics.snapshot).keep_writing(loop.stopping)  # to the worker's /metrics
    try:
        loop.run()
    finally:
        metrics.log()
        store.close()


def _report(loop: SessionizerLoop, metrics: StreamCounters, interval_s: float = 30.0) -> None:
    while not loop.stopping.wait(interval_s):
        metrics.log()


def _watch_parent(parent: int, loop: SessionizerLoop) -> None:
    def watch() -> None:
        while not loop.stopping.wait(0.5):
            if os.getppid() != parent:
                log.warning("the worker process is gone; stopping")
                loop.stop()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed the moment the worker dies
    except (OSError, AttributeError):  # not Linux: the parent watch above still applies
        pass


def stop_children(processes: list, timeout_s: float = 30.0) -> None:
    """SIGTERM every child (each finishes its batch and commits), then wait; kill what lingers."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.error("sessionizer process %s did not stop in %.0f s; killing it", process.pid, timeout_s)
            process.kill()
            process.join()
