"""The sessionizer's rules, without Kafka or a store: (state, events, now) -> (state, closed, late)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.clickstream import Interaction, MarkIrrelevant, SearchSession, SessionEnd
from schemas.sessions import OpenSession
from stream_processors.sessionizer import Arrival, Outcome, SessionRules, apply_events, close_idle

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
RULES = SessionRules(gap=timedelta(minutes=30), max_events=5, max_duration=timedelta(hours=4))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def search(sid: str = "s1", t: float = 0) -> SearchSession:
    return SearchSession(
        session_id=sid, search_query="red shoes",
        search_results=[{"object_id": f"o{i}", "rank": i} for i in range(5)], created_at=at(t),
    )


def click(event_id: str, t: float, sid: str = "s1", object_id: str = "o1") -> Interaction:
    return Interaction(session_id=sid, event_id=event_id, object_id=object_id, created_at=at(t))


def end(t: float, sid: str = "s1") -> SessionEnd:
    return SessionEnd(session_id=sid, created_at=at(t))


def irrelevant(t: float, sid: str = "s1") -> MarkIrrelevant:
    return MarkIrrelevant(session_id=sid, created_at=at(t))


def run(state: OpenSession | None, *events, now: datetime = NOW, rules: SessionRules = RULES,
        first_offset: int = -1) -> Outcome:
    arrivals = [Arrival(e, first_offset + i if first_offset >= 0 else -1, ref=i) for i, e in enumerate(events)]
    return apply_events(state, arrivals, session_id="s1", partition=3, now=now, rules=rules)


# --- closing ------------------------------------------------------------------------------------

def test_an_explicit_end_closes_the_session_with_its_deduplicated_events():
    out = run(None, search(), click("e1", 10), click("e2", 20), click("e1", 10), end(30))
    assert out.closed is not None and out.closed.close_reason == "end"
    assert [e.event_id for e in out.closed.events] == ["e1", "e2"]
    assert out.duplicates == 1
    assert out.closed.closed_at == at(30)
    assert out.state.closed_at == NOW and out.state.partition == 3  # the tombstone
    assert out.state.events == [] and out.state.search is None  # tombstones stay small


def test_a_session_stays_open_until_something_closes_it():
    out = run(None, search(), click("e1", 10))
    assert out.closed is None and out.state.closed_at is None
    assert out.state.last_seen_at == NOW and out.state.last_event_at == at(10)


def test_an_event_after_the_gap_closes_the_session_and_is_itself_late():
    first = run(None, search(), click("e1", 10))
    out = run(first.state, click("e2", 10 + 31 * 60))
    assert out.closed is not None and out.closed.close_reason == "gap"
    assert [e.event_id for e in out.closed.events] == ["e1"]
    assert [a.event.event_id for a in out.late] == ["e2"]
    assert out.state.late_events == 1


def test_idle_close_ends_a_quiet_session_by_wall_clock():
    first = run(None, search(), click("e1", 10))
    out = close_idle(first.state, now=NOW + timedelta(hours=1))
    assert out.closed is not None and out.closed.close_reason == "gap"
    assert out.closed.closed_at == at(10)  # event time: the same record whenever the timer fires
    assert close_idle(out.state, now=NOW + timedelta(hours=2)).closed is None  # a tombstone stays closed


def test_the_interaction_limit_closes_the_session_at_once():
    out = run(None, search(), *[click(f"e{i}", i) for i in range(7)])
    assert out.closed is not None and out.closed.close_reason == "max_length"
    assert len(out.closed.events) == RULES.max_events
    assert [a.event.event_id for a in out.late] == ["e5", "e6"]


def test_the_duration_limit_closes_the_session_before_the_late_event():
    rules = SessionRules(gap=timedelta(hours=1), max_events=500, max_duration=timedelta(hours=2))
    state = None
    for i in range(5):  # an event every 40 minutes: never a gap, but 2 h 40 in all
        state = run(state, *([search()] if i == 0 else []), click(f"e{i}", i * 2400), rules=rules).state
        if state.closed_at is not None:
            break
    assert state.closed_at is not None and state.late_events == 1


def test_a_repeated_search_or_mark_counts_as_a_duplicate():
    out = run(None, search(), search(), irrelevant(5), irrelevant(6), end(9))
    assert out.closed.is_irrelevant and out.duplicates == 2


# --- events before their search, orphans, late events -----------------------------------------------

def test_events_before_the_search_are_held_until_it_comes():
    held = run(None, click("e1", 5), irrelevant(6))
    assert held.closed is None and held.state.search is None and len(held.state.events) == 1
    out = run(held.state, search(t=0), end(9))
    assert out.closed is not None and [e.event_id for e in out.closed.events] == ["e1"]
    assert out.closed.is_irrelevant and out.closed.created_at == at(0)


def test_an_end_before_the_search_is_held_and_the_search_closes_the_session():
    held = run(None, click("e1", 5), end(9))
    assert held.closed is None and held.orphan is None and held.state.closed_at is None
    out = run(held.state, search(t=0))
    assert out.closed is not None and out.closed.close_reason == "end"


def test_a_session_without_a_search_closes_as_an_orphan():
    held = run(None, click("e1", 5))
    out = close_idle(held.state, now=NOW + timedelta(hours=1))
    assert out.closed is None
    assert out.orphan is not None and [e.event_id for e in out.orphan.events] == ["e1"]
    assert out.state.closed_at is not None


def test_events_held_without_a_search_are_bounded_by_the_interaction_limit():
    out = run(None, *[click(f"e{i}", i) for i in range(RULES.max_events + 2)])
    assert out.closed is None and out.close_reason == "max_length"
    assert out.orphan is not None and len(out.orphan.events) == RULES.max_events
    assert len(out.late) == 2 and out.state.closed_at is not None


def test_events_for_a_closed_session_are_late_and_counted_never_merged():
    closed = run(None, search(), click("e1", 1), end(2))
    out = run(closed.state, click("e2", 3), irrelevant(4), search())
    assert out.closed is None and out.orphan is None
    assert [a.ref for a in out.late] == [0, 1, 2]
    assert out.state.late_events == 3 and out.state.closed_at == closed.state.closed_at


# --- replays after a crash ----------------------------------------------------------------------------

def test_events_at_or_below_the_applied_offset_are_replays_and_change_nothing():
    first = run(None, search(), click("e1", 1), first_offset=100)
    assert first.state.applied_offset == 101
    again = run(first.state, search(), click("e1", 1), click("e2", 2), first_offset=100)
    assert again.replayed == 2 and again.duplicates == 0
    assert [e.event_id for e in again.state.events] == ["e1", "e2"]


def test_a_replayed_end_is_not_a_late_event():
    closed = run(None, search(), end(2), first_offset=7)
    again = run(closed.state, search(), end(2), first_offset=7)
    assert again.state is None and again.late == [] and again.replayed == 2


# --- properties ----------------------------------------------------------------------------------------

event_ids = st.sampled_from([f"e{i}" for i in range(8)])


@st.composite
def session_events(draw) -> tuple[list, list]:
    """The distinct events of one session (search, clicks, maybe a mark), all within the gap, and
    an arrival sequence: any order, any repeats."""
    ids = draw(st.lists(event_ids, unique=True, max_size=6))
    distinct = [search()] + [click(e, 10 + 60 * i, object_id=f"o{i % 5}") for i, e in enumerate(ids)]
    if draw(st.booleans()):
        distinct.append(irrelevant(5))
    repeats = draw(st.lists(st.sampled_from(distinct), max_size=6))
    arrival = draw(st.permutations(distinct + repeats))
    return distinct, arrival


def split(draw, items: list) -> list[list]:
    cuts = sorted(draw(st.lists(st.integers(0, len(items)), max_size=4)))
    bounds = [0, *cuts, len(items)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def feed(batches: list[list], rules: SessionRules, idle_between: list[bool] | None = None):
    """Apply batches in turn, as the worker would across Kafka batches; collect everything emitted."""
    state, closed, orphans, late, duplicates = None, [], [], [], 0
    for i, batch in enumerate(batches):
        out = run(state, *batch, rules=rules)
        state = out.state or state
        closed += [out.closed] if out.closed else []
        orphans += [out.orphan] if out.orphan else []
        late += out.late
        duplicates += out.duplicates
        if idle_between and idle_between[i] and state is not None:
            idle = close_idle(state, now=NOW + timedelta(hours=1))
            state = idle.state or state
            closed += [idle.closed] if idle.closed else []
            orphans += [idle.orphan] if idle.orphan else []
    return state, closed, orphans, late, duplicates


BIG = SessionRules(gap=timedelta(hours=1), max_events=100, max_duration=timedelta(hours=4))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=session_events(), with_end=st.booleans())
def test_any_order_and_any_repeats_give_the_same_closed_session(data, events, with_end):
    distinct, arrival = events
    arrival = arrival + ([end(600)] if with_end else [])
    reference = run(None, *distinct, *([end(600)] if with_end else []), rules=BIG)
    state, closed, orphans, _, _ = feed(split(data.draw, arrival), BIG)
    if not with_end:
        reference = close_idle(reference.state, now=NOW)
        closed += [close_idle(state, now=NOW).closed]
    assert len(closed) == 1 and orphans == []
    assert closed[0] == reference.closed


any_event = st.one_of(
    st.builds(lambda t: search(t=t), st.integers(0, 7200)),
    st.builds(lambda e, t: click(e, t), event_ids, st.integers(0, 7200)),
    st.builds(irrelevant, st.integers(0, 7200)),
    st.builds(end, st.integers(0, 7200)),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), arrival=st.lists(any_event, max_size=25))
def test_never_two_closed_sessions_for_one_id_and_every_event_is_accounted_for(data, arrival):
    rules = SessionRules(gap=timedelta(minutes=30), max_events=3, max_duration=timedelta(hours=1))
    batches = split(data.draw, arrival)
    idle = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    state, closed, orphans, late, duplicates = feed(batches, rules, idle)
    assert len(closed) + len(orphans) <= 1
    taken = 0  # arrivals the session took in: its search, each distinct interaction, a mark, an end
    if closed:
        session = closed[0]
        taken = 1 + len(session.events) + session.is_irrelevant + (session.close_reason == "end")
        assert len({e.event_id for e in session.events}) == len(session.events) <= rules.max_events
        assert session.closed_at >= session.events[-1].created_at if session.events else True
    elif orphans:
        (orphan,) = orphans
        taken = len(orphan.events) + orphan.is_irrelevant + (orphan.ended_at is not None)
    elif state is not None:
        taken = (state.search is not None) + len(state.events) + state.is_irrelevant + (state.ended_at is not None)
    # Every arrival is in exactly one place: taken into the session (closed, orphaned or still
    # open), counted as a duplicate, or late (and then counted on the tombstone).
    if state is not None and state.closed_at is not None:
        assert state.late_events == len(late)
    else:
        assert late == []
    assert taken + duplicates + len(late) == len(arrival)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), events=session_events())
def test_reprocessing_from_an_older_offset_after_a_crash_changes_nothing(data, events):
    _, arrival = events
    arrival = arrival + [end(600), click("late", 700)]
    numbered = [Arrival(e, offset=1000 + i) for i, e in enumerate(arrival)]
    kw = dict(session_id="s1", partition=0, now=NOW, rules=BIG)
    cut = data.draw(st.integers(0, len(numbered)))
    once = apply_events(None, numbered, **kw)
    # The state was saved after the whole batch, but the offset commit only reached ``cut``.
    again = apply_events(once.state, numbered[cut:], **kw)
    assert again.state is None and again.closed is None and again.late == []
    assert again.replayed == len(numbered) - cut
    assert once.closed is not None and once.state.late_events == 1


def test_records_built_without_validation_equal_their_validated_json():
    # The rules build models without re-validating (speed); what they build must still be exactly
    # what the contracts describe, field for field.
    from schemas.sessions import ClosedSession

    held = run(None, click("e1", 5), first_offset=3)
    assert OpenSession.model_validate_json(held.state.model_dump_json()) == held.state
    out = run(held.state, search(), irrelevant(6), end(9), first_offset=4)
    assert ClosedSession.model_validate_json(out.closed.model_dump_json()) == out.closed
    assert OpenSession.model_validate_json(out.state.model_dump_json()) == out.state
