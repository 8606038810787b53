"""The raw clickstream's path: read a batch, check it, sessionize it, hand closed sessions on.

Per batch of up to ``batch_events`` raw records:

1. check each record (``raw_events``); refused ones go to the dead-letter topic as they came;
2. group the valid events by session and load the touched sessions' states in ONE store call;
3. apply the rules (``sessionizer.apply_events``) to each session;
4. send closed sessions to the batcher, late events to the late topic, orphans to the
   dead-letter topic — and wait until the broker has them all;
5. save the new states (tombstones for closed sessions) in ONE store call;
6. commit the batch's offsets.

A crash anywhere replays the batch from step 1: sessions already sent are sent again (the store
keeps the first copy of a session), and events already folded into a saved state are recognised by
offset (``OpenSession.applied_offset``) and skipped, so nothing is counted twice and a replayed
end is not mistaken for a late event. The working state lives in the store, not in memory: an
open session costs this process nothing.

Why not a Faust stream: Faust hands records to agents one at a time through asyncio queues; even
``take_events`` with no work at all tops out near 10 000 records/s on a 2-core machine, several
times less than this loop. This loop reads with librdkafka in batches, in a process (or thread) of
its own that is started and stopped with the Faust app (``SessionizerService``); the batcher and
the command path, which see tens of records a second (closed sessions travel hundreds to a
record), remain Faust agents.

Idle close: between batches, every ``idle_scan_s``, the loop asks the store for open sessions of
the partitions it is assigned whose last event was seen more than the gap ago, and closes them the
same way — but only while it keeps up with its input (see ``run``). Only this loop changes the states of those partitions (they are its assignment), and it
does one thing at a time, so the idle scan never races a batch.

Why one module of some 450 lines: the six steps share one batch's state, one producer's delivery
errors and one consumer's assignment; split apart, each would reach into the others' internals.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ingest.partitioner import partition_for
from messaging.config import KAFKA_PARTITIONER, KafkaCluster, as_cluster
from schemas.base import utc_now
from schemas.faults import crash_point
from schemas.sessions import ClosedSession, OpenSession
from schemas.topics import TopicRegistry
from session_store.base import SessionStore
from schemas.dead_letters import dead_letter_headers
from stream_processors.gc_pause import gc_paused
from observability.dead_letters import reason_kind
from stream_processors.counters import StreamCounters
from stream_processors.raw_events import check_raw_event
from stream_processors.batcher_records import BATCHER_KEY, encode_sessions
from stream_processors.sessionizer import Arrival, Outcome, SessionRules, apply_events, close_idle

log = logging.getLogger(__name__)

_IDLE_CHUNK = 2000


class DeliveryFailed(RuntimeError):
    """The broker did not take what a batch produced: its offsets must not be committed."""


# Room a record needs besides its value: key, dead-letter headers (the reason is cut at 2000
# characters), record and batch framing.
_RECORD_OVERHEAD = 64 * 1024


class SessionizerLoop:
    def __init__(
        self,
        *,
        bootstrap: KafkaCluster | str,
        topics: TopicRegistry,
        store: SessionStore,
        rules: SessionRules,
        group_id: str,
        max_event_bytes: int = 1 << 20,
        max_record_bytes: int | None = None,
        max_attempts: int = 3,
        batch_events: int = 20_000,
        poll_timeout_s: float = 0.2,
        idle_scan_s: float | None = None,
        tombstone_ttl_s: float = 7 * 24 * 3600.0,
        session_timeout_s: float = 10.0,
        heartbeat_interval_s: float = 3.0,
        metrics: StreamCounters | None = None,
        consumer_config: dict[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self.store = store
        self.rules = rules
        self.max_event_bytes = max_event_bytes
        self.max_attempts = max_attempts
        self.partitions = topics.clickstream.partitions
        self.batch_events = batch_events
        self.poll_timeout_s = poll_timeout_s
        gap_s = rules.gap.total_seconds()
        # A quarter of the gap: a quiet session closes between 1 and 1.25 gaps after its last event.
        self.idle_scan_s = idle_scan_s if idle_scan_s is not None else min(max(gap_s / 4, 0.1), 30.0)
        self.tombstone_ttl = timedelta(seconds=tombstone_ttl_s)
        self.metrics = metrics or StreamCounters()
        self.counters = self.metrics.sessionizer
        self.assigned: set[int] = set()
        self.stopping = threading.Event()
        self._delivery_errors: list[str] = []
        cluster = as_cluster(bootstrap)
        self._consumer_config = cluster.consumer(
            group_id, session_timeout_s=session_timeout_s, heartbeat_interval_s=heartbeat_interval_s,
            # offsets are committed only after a batch is fully handled (the consumer never auto-commits)
            extra={"fetch.max.bytes": 64 << 20, **(consumer_config or {})},
        )
        # The topics' max.message.bytes: nothing this loop produces may be refused by the broker.
        self._producer_config = cluster.producer(max_message_bytes=max_record_bytes or topics.max_message_bytes,
                                                 client_id="embedding-studio-sessionizer")
        # Every value this loop produces is at most this (sessions records, dead letters, late
        # events): a bigger one is split, trimmed with a marker or dead-lettered, never produced.
        self._max_value_bytes = self._producer_config["message.max.bytes"] - _RECORD_OVERHEAD
        self._max_session_bytes = self._max_value_bytes - 16 * 1024  # room for the record's index line
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # --- life cycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Consume until ``stop()``; raises on what must stop the worker (store or broker failures)."""
        self._producer = Producer(self._producer_config)
        self._consumer = Consumer(self._consumer_config)
        self._consumer.subscribe(
            [self.topics.clickstream.name], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        next_idle_scan = time.monotonic() + self.idle_scan_s
        next_purge = time.monotonic() + 60.0
        try:
            while not self.stopping.is_set():
                messages = self._consumer.consume(self.batch_events, timeout=self.poll_timeout_s)
                if messages:
                    with gc_paused():
                        self.process_guarded(messages)
                # A full read means a backlog (a restart after downtime, a burst): the events still
                # in it may belong to sessions that look idle by wall clock, so idle closing waits
                # until the loop keeps up again; meanwhile gaps are caught in event time.
                caught_up = len(messages) < self.batch_events
                if caught_up and time.monotonic() >= next_idle_scan:
                    with gc_paused():
                        self._close_idle_guarded(utc_now())
                    next_idle_scan = time.monotonic() + self.idle_scan_s
                if time.monotonic() >= next_purge:
                    purged = self.store.purge_tombstones(utc_now() - self.tombstone_ttl)
                    self.counters["tombstones_purged"] += purged
                    next_purge = time.monotonic() + min(3600.0, self.tombstone_ttl.total_seconds() / 10)
        finally:
            self._producer.flush(10)
            self._consumer.close()  # leaves the group at once: the partitions move without a timeout

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {tp.partition for tp in partitions}
        log.info("sessionizer assigned partitions %s", sorted(self.assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing is in flight here: callbacks run inside consume(), between two whole batches.
        self.assigned -= {tp.partition for tp in partitions}
        log.info("sessionizer revoked partitions %s", sorted(tp.partition for tp in partitions))

    # --- one batch ---------------------------------------------------------------------------------
    def process(self, messages: list[Message], now: datetime | None = None) -> None:
        now = now or utc_now()
        counters = self.counters
        check, max_bytes, partitions = check_raw_event, self.max_event_bytes, self.partitions
        by_session: dict[str, list[Arrival[Message]]] = {}
        partition_of: dict[str, int] = {}  # the partition each session's key belongs on
        next_offsets: dict[int, int] = {}
        for message in messages:
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("clickstream consumer: %s", message.error())
                continue
            partition, offset = message.partition(), message.offset()
            next_offsets[partition] = offset + 1
            event = check(message.key(), message.value(), max_bytes)
            if type(event) is str:
                self._dead_letter(message, event)
                continue
            session_id = event.session_id
            home = partition_of.get(session_id)
            if home is None:  # one hash per session and batch, not per event
                home = partition_of[session_id] = partition_for(message.key(), partitions)
            if partition != home:
                self._dead_letter(message, self._misrouted(partition, home))
                continue
            arrivals = by_session.get(session_id)
            if arrivals is None:
                by_session[session_id] = arrivals = []
            arrivals.append((event, offset, message))  # an Arrival, as a plain tuple
        counters["events_in"] += len(messages)

        states = self.store.load_open_sessions(by_session) if by_session else {}
        changed: list[OpenSession] = []
        closed: list[ClosedSession] = []
        for session_id, arrivals in by_session.items():
            try:
                outcome = apply_events(
                    states.get(session_id), arrivals, session_id=session_id, partition=partition_of[session_id],
                    now=now, rules=self.rules,
                )
            except Exception as error:  # one session's trouble must not hold up the others
                why = f"sessionizer failed on session {session_id!r}: {type(error).__name__}: {error}"
                for _, _, message in arrivals:
                    self._dead_letter(message, why)
                continue
            self._collect(outcome, changed, closed)
        self._send_sessions(closed)
        self._flush()
        crash_point("sessionizer.after_produce")
        self._save_states(changed)
        crash_point("sessionizer.after_save")
        self._commit(next_offsets)
        counters["batches"] += 1

    def process_guarded(self, messages: list[Message], attempts: int | None = None) -> None:
        """``process``, with whatever keeps failing isolated: the batch is tried ``max_attempts``
        times, then in halves, down to single records; a record that fails ``max_attempts`` times
        in a row goes to the dead-letter topic with the last error, and the loop goes on.

        Broker trouble (``DeliveryFailed``) and a store that does not answer at all are not the
        records' fault: they stop the worker, and a restart replays from the last commit."""
        # The whole batch and a single record get every attempt; the halves in between one each.
        attempts = attempts or self.max_attempts
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                self.process(messages)
                return
            except DeliveryFailed:
                raise
            except Exception as error:
                last = error
                self.counters["batch_failures"] += 1
                log.warning("batch of %d record(s) failed (attempt %d of %d): %r", len(messages), attempt,
                            attempts, error)
                self._delivery_errors = []
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
        assert last is not None
        self._require_store(last)
        if len(messages) > 1:
            middle = len(messages) // 2
            for half in (messages[:middle], messages[middle:]):
                self.process_guarded(half, None if len(half) == 1 else 1)
            return
        (message,) = messages
        self._dead_letter(message, f"failed {attempts} times in a row: {type(last).__name__}: {last}")
        self._flush()
        self._commit({message.partition(): message.offset() + 1})

    def _misrouted(self, partition: int, home: int) -> str:
        return (
            f"misrouted: on partition {partition}, but its key belongs on partition {home} of {self.partitions} "
            f"(Kafka's murmur2 rule), where the rest of its session is; set the producer's "
            f"partitioner={KAFKA_PARTITIONER} (librdkafka's default, consistent_random, places keys elsewhere), "
            "or use the producer SDK, which does"
        )

    def _require_store(self, error: Exception) -> None:
        """Re-raise ``error`` unless the store answers a read: when it does not, the trouble is the
        store's, not the records', and nothing may be dead-lettered for it."""
        try:
            self.store.load_open_sessions(["\x00probe"])
        except Exception:
            log.critical("the session store does not answer; stopping (%r)", error)
            raise error

    def _save_states(self, states: list[OpenSession]) -> None:
        """Save in one call; if the store refuses, find the states it refuses and dead-letter them."""
        if not states:
            return
        try:
            self.store.save_open_sessions(states)
            return
        except Exception as error:
            first = error
        refused: list[tuple[OpenSession, Exception]] = []
        for state in states:
            try:
                self.store.save_open_sessions([state])
            except Exception as error:
                refused.append((state, error))
        if len(refused) == len(states):
            self._require_store(first)
        for state, error in refused:
            self.counters["states_refused"] += 1
            self._dead_letter_state(
                state, f"the session store refused this session's state ({type(error).__name__}: {error}); "
                "its events are in this record and will not be stored")
        self._flush()

    def _close_idle_guarded(self, now: datetime) -> None:
        try:
            self.close_idle_sessions(now)
        except DeliveryFailed:
            raise
        except Exception as error:  # the next scan tries again; a store that is gone stops the worker
            self.counters["idle_scan_failures"] += 1
            log.error("idle scan failed: %r", error)
            self._require_store(error)

    def close_idle_sessions(self, now: datetime) -> int:
        """Close the quiet open sessions of this loop's partitions; returns how many."""
        if not self.assigned:
            return 0
        idle = self.store.iter_idle_open_sessions(sorted(self.assigned), now - self.rules.gap)
        total = 0
        while chunk := list(islice(idle, _IDLE_CHUNK)):
            changed: list[OpenSession] = []
            closed: list[ClosedSession] = []
            for state in chunk:
                try:
                    outcome = close_idle(state, now=now)
                except Exception as error:
                    self._dead_letter_state(state, f"idle close failed: {type(error).__name__}: {error}")
                    continue
                self._collect(outcome, changed, closed)
            self._send_sessions(closed)
            self._flush()
            crash_point("sessionizer.idle_close")
            self._save_states(changed)
            total += len(chunk)
        if total:
            self.counters["idle_closed"] += total
        return total

    def _collect(self, outcome: Outcome[Message], changed: list[OpenSession], closed: list[ClosedSession]) -> None:
        counters = self.counters
        if outcome.state is not None:
            changed.append(outcome.state)
        if outcome.closed is not None:
            closed.append(outcome.closed)
            counters[f"sessions_closed_{outcome.close_reason}"] += 1
        if outcome.orphan is not None:
            self._dead_letter_orphan(outcome.orphan, outcome.close_reason or "gap")
        if outcome.late:
            counters["late_events"] += len(outcome.late)
            for event, _, message in outcome.late:
                self._send_late(message, event.session_id)
        if outcome.duplicates:
            counters["duplicates"] += outcome.duplicates
        if outcome.replayed:
            counters["replayed"] += outcome.replayed

    # --- output ------------------------------------------------------------------------------------
    def _send_sessions(self, closed: list[ClosedSession]) -> None:
        records = encode_sessions(closed, too_big=self._dead_letter_too_big, max_session_bytes=self._max_session_bytes)
        for record in records:
            self._produce(self.topics.sessions.name, BATCHER_KEY, record)

    def _dead_letter_too_big(self, session: ClosedSession, size: int) -> None:
        # Hundreds of interactions each carrying near max_event_bytes of meta: no record could carry
        # the session, and refusing it must not stop the worker. Its events were each valid, so
        # only the verdict is kept.
        self.counters["sessions_too_big"] += 1
        why = f"closed session of {size} bytes, more than the {self._max_session_bytes} a record may carry; dropped"
        headers = dead_letter_headers(why, self.topics.clickstream.name, -1, -1)
        self._produce(self.topics.clickstream_dlq.name, session.session_id.encode(), None, headers)

    def _send_late(self, message: Message | None, session_id: str) -> None:
        if message is None:
            return
        reason = f"session {session_id!r} was already closed when this event arrived"
        headers = dead_letter_headers(reason, message.topic(), message.partition(), message.offset())
        # The source partition: the late topic is partitioned like the clickstream, by session.
        self._produce(self.topics.clickstream_late.name, message.key(), message.value(), headers,
                      partition=message.partition())

    def _dead_letter(self, message: Message, reason: str) -> None:
        self.counters["dead_letters"] += 1
        self.counters["dead_letter_" + reason_kind(reason)] += 1  # by kind, for the metrics
        value = message.value()
        if value is not None and len(value) > self._max_value_bytes:
            # Only a broker that does not enforce max.message.bytes delivers such a record.
            reason += f"; value of {len(value)} bytes not kept: over the {self._max_value_bytes} a record may carry"
            value = None
        headers = dead_letter_headers(reason, message.topic(), message.partition(), message.offset())
        self._produce(self.topics.clickstream_dlq.name, message.key(), value, headers)

    def _dead_letter_orphan(self, state: OpenSession, reason: str) -> None:
        # The session's events came in several records, so there are no single original bytes to
        # keep: the value is the state held for it (an OpenSession), the offset its last event's.
        self.counters["orphan_sessions"] += 1
        why = (f"session closed ({reason}) without a search: {len(state.events)} interaction(s) held, "
               "nothing to train on")
        self._dead_letter_state(state, why)

    def _dead_letter_state(self, state: OpenSession, why: str) -> None:
        """A session's state in the dead-letter topic; one too big for a record keeps its event
        ids only, and the reason says so (50 interactions of 100 KB each make a 5 MB state)."""
        value = state.model_dump_json().encode()
        if len(value) > self._max_value_bytes:
            self.counters["dead_letters_trimmed"] += 1
            why += (f"; trimmed: the {len(value)}-byte state is over the {self._max_value_bytes} a record may "
                    "carry, so the value keeps the session's event ids only")
            value = json.dumps({
                "trimmed": True, "session_id": state.session_id, "state_bytes": len(value),
                "has_search": state.search is not None, "event_ids": [e.event_id for e in state.events],
            }).encode()[: self._max_value_bytes]
        headers = dead_letter_headers(why, self.topics.clickstream.name, state.partition, state.applied_offset)
        self._produce(self.topics.clickstream_dlq.name, state.session_id.encode(), value, headers)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> None:
        assert self._producer is not None
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.05)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}: {error}")

    def _flush(self) -> None:
        assert self._producer is not None
        remaining = self._producer.flush(60)
        errors, self._delivery_errors = self._delivery_errors, []
        if remaining or errors:
            raise DeliveryFailed(f"{remaining} record(s) undelivered, errors: {errors[:5]}")

    def _commit(self, next_offsets: dict[int, int]) -> None:
        if not next_offsets or self._consumer is None:
            return
        name = self.topics.clickstream.name
        try:
            self._consumer.commit(
                offsets=[TopicPartition(name, p, o) for p, o in next_offsets.items()], asynchronous=False
            )
        except KafkaException as error:
            # A rebalance took the partitions meanwhile: the next owner replays from the last
            # commit, and the applied offsets in the saved states turn the replay into no-ops.
            log.warning("offset commit failed (%s); the batch will be replayed and skipped by offset", error)
            self.counters["commit_failures"] += 1

