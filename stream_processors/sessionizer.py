"""The sessionizer's rules, as a pure function of (stored state, new events, now).

Nothing here touches Kafka or a store: the worker loads the states of the sessions a batch of raw
events touches, calls ``apply_events`` once per session, saves what comes back and emits the
closed sessions. The same rules close idle sessions from a timer (``close_idle``).

A session is the search (``SearchSession``) plus the events that share its ``session_id``:
interactions (deduplicated by ``event_id``), an irrelevance mark and an explicit end. It closes

- on a ``SessionEnd`` (reason ``end``); an end that arrives before the search is held, and the
  session closes as soon as the search comes;
- when an event comes more than ``gap`` after the session's latest event (event time; reason
  ``gap``), or when no event comes for ``gap`` of wall-clock time (``close_idle``, reason ``gap``);
- when it holds ``max_events`` interactions (with or without its search), or an event comes more
  than ``max_duration`` after its first one (reason ``max_length``).

The event that reveals a gap or an over-long session is not part of it: like every event for a
closed session, it is *late* — counted on the tombstone the closed session leaves behind and handed
back to the caller, never merged. A session that closes without ever having seen its search cannot
train anything; it comes back as an ``orphan`` for the dead-letter topic.

Given the events a session took in before it closed, what it contains does not depend on their
order or on repeats (the one exception: of two different searches under one id, the first received
is kept), and its ``closed_at`` is event time (its latest event), so a replay after a crash rebuilds
the very same record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel

from schemas.clickstream import ClickstreamEvent, Interaction, MarkIrrelevant, SearchSession, SessionEnd
from schemas.sessions import ClosedSession, OpenSession, SessionCloseReason, SessionEvent

Ref = TypeVar("Ref")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class SessionRules:
    gap: timedelta = timedelta(minutes=30)
    max_events: int = 500
    max_duration: timedelta = timedelta(hours=4)

    @classmethod
    def from_seconds(cls, gap_s: float, max_events: int, max_duration_s: float) -> "SessionRules":
        return cls(timedelta(seconds=gap_s), max_events, timedelta(seconds=max_duration_s))


class Arrival(NamedTuple, Generic[Ref]):
    """One parsed event as it arrived: its source offset (-1 when unknown) lets a replay be
    recognised; ``ref`` is the caller's handle on the raw record, e.g. to forward a late one.
    The worker passes plain ``(event, offset, ref)`` tuples: it makes one per raw event."""

    event: ClickstreamEvent
    offset: int = -1
    ref: Ref | None = None


@dataclass(slots=True)
class Outcome(Generic[Ref]):
    """What one call decided. ``state`` is the session's new state to save (None: nothing changed),
    a tombstone once the session is closed."""

    state: OpenSession | None
    closed: ClosedSession | None = None
    orphan: OpenSession | None = None
    close_reason: SessionCloseReason | None = None
    late: list[Arrival[Ref]] = field(default_factory=list)
    duplicates: int = 0
    replayed: int = 0


class _Working:
    """A mutable copy of one session's state while a batch of its events is applied (pydantic
    models are frozen, and re-validating one per event would cost more than the rules)."""

    __slots__ = (
        "session_id", "partition", "search", "events", "event_ids", "is_irrelevant", "first_event_at",
        "last_event_at", "last_seen_at", "closed_at", "late_events", "ended_at", "applied_offset",
    )

    def __init__(self, session_id: str, partition: int, first: datetime, now: datetime) -> None:
        self.session_id = session_id
        self.partition = partition
        self.search: SearchSession | None = None
        self.events: list[SessionEvent] = []
        self.event_ids: set[str] = set()
        self.is_irrelevant = False
        self.first_event_at = first
        self.last_event_at = first
        self.last_seen_at = now
        self.closed_at: datetime | None = None
        self.late_events = 0
        self.ended_at: datetime | None = None
        self.applied_offset = -1

    @classmethod
    def of(cls, state: OpenSession) -> "_Working":
        work = cls(state.session_id, state.partition, state.first_event_at, state.last_seen_at)
        work.search = state.search
        work.events = list(state.events)
        work.event_ids = {e.event_id for e in state.events}
        work.is_irrelevant = state.is_irrelevant
        work.last_event_at = state.last_event_at
        work.closed_at = state.closed_at
        work.late_events = state.late_events
        work.ended_at = state.ended_at
        work.applied_offset = state.applied_offset
        return work

    def freeze(self) -> OpenSession:
        return _build(OpenSession, {
            "schema_version": 1, "session_id": self.session_id, "partition": self.partition,
            "search": self.search, "events": self.events, "is_irrelevant": self.is_irrelevant,
            "first_event_at": self.first_event_at, "last_event_at": self.last_event_at,
            "last_seen_at": self.last_seen_at, "closed_at": self.closed_at, "late_events": self.late_events,
            "ended_at": self.ended_at, "applied_offset": self.applied_offset,
        })


def _build(model: type[M], values: dict[str, Any]) -> M:
    """A model from values that are already valid (every one came from a parsed event), without
    validating them again; pydantic's own ``model_construct`` costs twice as much."""
    instance = model.__new__(model)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", set(values))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance


_set = object.__setattr__


def apply_events(
    state: OpenSession | None,
    arrivals: Sequence[Arrival[Ref]],
    *,
    session_id: str,
    partition: int,
    now: datetime,
    rules: SessionRules,
) -> Outcome[Ref]:
    """Apply one session's new events, in arrival order, to its stored state (None: never seen)."""
    outcome: Outcome[Ref] = Outcome(state=None)
    if not arrivals:
        return outcome
    work = _Working.of(state) if state is not None else None
    if work is not None:
        work.partition = partition  # the idle scan of the worker that owns the partition now must find it
    changed = False
    for arrival in arrivals:
        event, offset, _ = arrival
        if work is not None and 0 <= offset <= work.applied_offset:
            outcome.replayed += 1  # already applied before a crash cut the offset commit short
            continue
        if work is None:
            work = _Working(session_id, partition, event.created_at, now)
        changed = True
        if offset > work.applied_offset:
            work.applied_offset = offset
        if work.closed_at is None:
            at = event.created_at
            if at - work.last_event_at > rules.gap:
                _close(work, "gap", now, outcome)
            elif at - work.first_event_at > rules.max_duration:
                _close(work, "max_length", now, outcome)
        if work.closed_at is not None:
            work.late_events += 1
            outcome.late.append(arrival)
            continue
        work.last_seen_at = now
        _take(work, event, outcome)
        if work.search is not None and work.ended_at is not None:
            _close(work, "end", now, outcome)
        elif len(work.events) >= rules.max_events:
            # Also without a search: what a session may hold stays bounded whatever a client sends.
            _close(work, "max_length", now, outcome)
    if changed and work is not None:
        outcome.state = work.freeze()
    return outcome


def close_idle(state: OpenSession, *, now: datetime) -> Outcome:
    """Close a session that saw no event for the gap (the caller picked it by ``last_seen_at``)."""
    outcome: Outcome = Outcome(state=None)
    if state.closed_at is not None:
        return outcome
    work = _Working.of(state)
    _close(work, "gap", now, outcome)
    outcome.state = work.freeze()
    return outcome


def _take(work: _Working, event: ClickstreamEvent, outcome: Outcome) -> None:
    at = event.created_at
    if isinstance(event, Interaction):
        if event.event_id in work.event_ids:
            outcome.duplicates += 1
            return
        work.event_ids.add(event.event_id)
        work.events.append(_build(SessionEvent, {
            "event_id": event.event_id, "object_id": event.object_id, "event_type": event.event_type,
            "created_at": at, "meta": event.meta,
        }))
    elif isinstance(event, SearchSession):
        if work.search is not None:
            # A re-sent search; a different one under the same id cannot be told apart from a
            # client bug, and the first one is what the interactions were made on.
            outcome.duplicates += 1
            return
        work.search = event
    elif isinstance(event, MarkIrrelevant):
        if work.is_irrelevant:
            outcome.duplicates += 1
        work.is_irrelevant = True
    elif isinstance(event, SessionEnd):
        if work.ended_at is not None:
            outcome.duplicates += 1
            return
        work.ended_at = at
    if at < work.first_event_at:
        work.first_event_at = at
    if at > work.last_event_at:
        work.last_event_at = at


def _close(work: _Working, reason: SessionCloseReason, now: datetime, outcome: Outcome) -> None:
    outcome.close_reason = reason
    if work.search is None:
        outcome.orphan = work.freeze()
    else:
        search = work.search
        outcome.closed = _build(ClosedSession, {
            "schema_version": 1,
            "session_id": work.session_id,
            "search_query": search.search_query,
            "search_meta": search.search_meta,
            "search_results": search.search_results,
            "user_id": search.user_id,
            "created_at": search.created_at,
            # Sorted, so that the stored record does not depend on the order events arrived in.
            "events": sorted(work.events, key=_event_order),
            "is_irrelevant": work.is_irrelevant,
            "closed_at": work.last_event_at,
            "close_reason": reason,
        })
    # The tombstone keeps only what late-event detection and the idle/purge scans need.
    work.closed_at = now
    work.search = None
    work.events = []
    work.event_ids = set()
    work.is_irrelevant = False


def _event_order(event: SessionEvent) -> tuple[datetime, str]:
    return event.created_at, event.event_id
