"""The batcher agent: the one Faust agent that changes the open batch, and announces every batch it closes.

It reads the sessions topic (closed sessions from the sessionizers, release requests from the
commands agent, age checks from the timer) and applies each to the ``Batcher``, whose store calls
run on one thread of their own, off the event loop. A batch is announced (BatchClosed on the
batches topic) right after the store closed it; once the broker acknowledged the record, the store
marks it announced (``announcements``). The worker that owns the sessions partition *takes over*
before its first record: it resumes the open batch and announces what a crashed predecessor left
unannounced.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import faust

from messaging import KafkaCluster, TopicReader
from schemas.base import utc_now
from schemas.faults import crash_point
from schemas.sessions import BatchRecord
from session_store.base import SessionStore, StaleBatcher
from stream_processors.announcements import batch_closed
from stream_processors.batcher import Batcher
from stream_processors.batcher_records import (
    BATCHER_KEY,
    AgeCheck,
    ReleaseRequested,
    SessionsClosed,
    encode,
    parse_batcher_input,
)
from stream_processors.gc_pause import gc_paused
from stream_processors.counters import StreamCounters

log = logging.getLogger(__name__)
T = TypeVar("T")


class BatcherAgent:
    def __init__(self, app: faust.App, batcher: Batcher, store: SessionStore, *, sessions_topic: faust.TopicT,
                 batches_topic: faust.TopicT, metrics: StreamCounters, cluster: KafkaCluster) -> None:
        self.app = app
        self.cluster = cluster
        self.batcher = batcher
        self.store = store
        self.sessions_topic = sessions_topic
        self.batches_topic = batches_topic
        self.metrics = metrics
        self.owns_batch = False  # taken over since the sessions partition was (re)assigned
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher-store")

    async def _in_store_thread(self, fun: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, fun, *args)

    # --- the agent ---------------------------------------------------------------------------------
    async def process(self, stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            if not self.owns_batch:
                await self.take_over()
            try:
                record = parse_batcher_input(value)
            except (ValueError, KeyError, TypeError) as error:  # our own topic: a bug or a foreign writer
                log.error("unreadable record on %s skipped: %s", self.sessions_topic.get_topic_name(), error)
                continue
            try:
                await self._apply(record)
            except StaleBatcher:
                # Another worker took the batch over during a rebalance: this one must not write;
                # it takes over again (with a newer epoch) if the partition comes back.
                log.warning("a newer batcher owns the batch; this worker stops writing to it")
                self.owns_batch = False
                continue
            except Exception as error:
                # The store or the broker failed: stop the worker rather than ack what was not done;
                # a restart replays from the last committed offset.
                log.critical("batcher failed: %r", error)
                await self.app.crash(error)
                raise

    async def _apply(self, record: SessionsClosed | ReleaseRequested | AgeCheck) -> None:
        now = utc_now()
        if isinstance(record, SessionsClosed):
            closed = await self._in_store_thread(_paused(self.batcher.add), record.sessions, now)
        elif isinstance(record, ReleaseRequested):
            closed = await self._in_store_thread(self.batcher.release, record.release_id, now)
        else:
            closed = await self._in_store_thread(self.batcher.check_age, now)
        if closed:
            crash_point("batcher.batch_close")
        for batch in closed:
            await self.announce(batch)

    async def announce(self, record: BatchRecord) -> None:
        closed = batch_closed(record)
        sent = await self.batches_topic.send(key=closed.batch_id.encode(), value=closed.model_dump_json().encode(),
                                             force=True)
        await sent  # acknowledged: only now may the store say so
        crash_point("batcher.announce")
        await self._in_store_thread(self.store.mark_announced, closed.batch_id, utc_now())
        self.metrics.batcher["batches_announced"] += 1
        log.info("announced batch %s (%d sessions, %s)", closed.batch_id, closed.session_count, closed.close_reason,
                 extra={"batch_id": closed.batch_id})

    async def take_over(self) -> None:
        """This worker now owns the open batch: pick it up, and announce what a crash left unsaid."""
        await self._in_store_thread(self.batcher.resume)  # stale open batches it closes are announced just below
        # Exactly the closed batches the store has not marked announced: a crash between the
        # close and the broker's ack, or between the ack and the mark (then the same key and
        # value go out again, and compaction keeps one).
        unannounced = await self._in_store_thread(self.store.list_unannounced)
        # A crash after the broker took the BatchClosed and before the mark: the record is there
        # already. Read the (compacted, so short) topic to its end before sending again, so that a
        # batch is on the topic once, not only once after compaction.
        on_topic = await self._on_topic({r.batch_id for r in unannounced if r.close_reason != "replay"})
        for record in unannounced:
            if record.close_reason == "replay" or record.batch_id in on_topic:
                # `replay` announces its own batch (or, with --no-train, on purpose not at all).
                await self._in_store_thread(self.store.mark_announced, record.batch_id, utc_now())
                continue
            log.warning("batch %s was closed but not marked announced (a crash?); announcing it now", record.batch_id)
            await self.announce(record)
        self.owns_batch = True

    async def _on_topic(self, batch_ids: set[str]) -> set[str]:
        """Which of ``batch_ids`` have a BatchClosed on the batches topic already."""
        if not batch_ids:
            return set()

        def read() -> set[str]:
            found: set[str] = set()
            with TopicReader(self.cluster, self.batches_topic.get_topic_name()) as reader:
                for records in reader.until_caught_up(60.0):
                    found.update(key for m in records if (key := (m.key() or b"").decode()) in batch_ids)
            return found

        found = await asyncio.get_running_loop().run_in_executor(None, read)
        for batch_id in sorted(found):
            log.warning("batch %s was announced but not marked (a crash after the ack?); marking it", batch_id)
        return found

    # --- waking it -----------------------------------------------------------------------------------
    async def wake(self) -> None:
        """An age check through the batcher's own topic: the batcher alone decides whether the batch
        is too old, and a new owner of the sessions partition takes over even with no traffic."""
        sent = await self.sessions_topic.send(key=BATCHER_KEY, value=encode(AgeCheck(sent_at=utc_now())), force=True)
        await sent

    async def on_partitions_revoked(self, app: faust.App, revoked: set, **_: Any) -> None:
        if any(tp.topic == self.sessions_topic.get_topic_name() for tp in revoked):
            self.owns_batch = False  # another worker may change the batch meanwhile: re-read it on return

    async def on_partitions_assigned(self, app: faust.App, assigned: set, **_: Any) -> None:
        if any(tp.topic == self.sessions_topic.get_topic_name() for tp in assigned):
            # Wake the batcher now rather than at the next record, so that it takes over (and
            # announces what a crashed predecessor left unannounced) even with no traffic.
            # Not awaited here: the rebalance must not wait for the broker.
            asyncio.ensure_future(self.wake())


def _paused(fun: Callable[..., T]) -> Callable[..., T]:
    def call(*args: Any) -> T:
        with gc_paused():
            return fun(*args)

    return call
