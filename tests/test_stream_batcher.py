"""The batcher's rules over a real SQLite store, and the records that carry its input."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas.sessions import BatchStatus
from session_store import StaleBatcher
from session_store.sqlite_store import SqliteSessionStore
from stream_processors.batcher import Batcher
from stream_processors.batcher_records import (
    AgeCheck,
    ReleaseRequested,
    SessionsClosed,
    encode,
    encode_sessions,
    parse_batcher_input,
)
from tests.fixtures.stores import at, make_session


@pytest.fixture
def store(tmp_path) -> SqliteSessionStore:
    with SqliteSessionStore(tmp_path / "sessions.db") as store:
        yield store


def batcher(store, max_sessions: int = 3, max_age_s: float = 3600) -> Batcher:
    return Batcher(store, max_sessions=max_sessions, max_age=timedelta(seconds=max_age_s))


def sessions(*ids: str):
    return [make_session(i) for i in ids]


def test_a_full_batch_closes_and_one_record_may_fill_several(store):
    b = batcher(store)
    closed = b.add(sessions("a", "b", "c", "d", "e", "f", "g"), at(0))
    assert [r.session_count for r in closed] == [3, 3] and [r.close_reason for r in closed] == ["size", "size"]
    assert b.count == 1 and store.count_sessions(b.open.batch_id) == 1


def test_sessions_sent_again_are_not_counted_again(store):
    b = batcher(store)
    b.add(sessions("a", "b"), at(0))
    assert b.add(sessions("a", "b"), at(1)) == [] and b.count == 2
    assert b.counters["sessions_already_stored"] == 2
    (closed,) = b.add(sessions("b", "c"), at(2))
    assert closed.session_count == 3


def test_a_release_closes_the_open_batch_once_per_release_id(store):
    b = batcher(store, max_sessions=100)
    b.add(sessions("a", "b"), at(0))
    (closed,) = b.release("r1", at(1))
    assert (closed.close_reason, closed.release_id, closed.session_count) == ("release", "r1", 2)
    b.add(sessions("c"), at(2))
    assert b.release("r1", at(3)) == []  # the same release again: nothing more
    assert store.get_open_batch().batch_id == b.open.batch_id and b.count == 1


def test_a_release_with_nothing_to_release_closes_nothing(store):
    b = batcher(store)
    assert b.release("r-empty", at(0)) == []
    assert store.list_batches() == [] and b.counters["releases_empty"] == 1


def test_a_batch_closes_when_its_age_is_reached(store):
    b = batcher(store, max_sessions=100, max_age_s=60)
    b.add(sessions("a"), at(0))
    assert b.check_age(at(59)) == []
    (closed,) = b.check_age(at(61))
    assert closed.close_reason == "age" and b.open is None
    assert b.check_age(at(500)) == []  # no open batch, nothing to age


def test_a_batch_closed_behind_the_batchers_back_is_left_for_a_new_one(store):
    b = batcher(store, max_sessions=100)
    b.add(sessions("a"), at(0))
    store.close_batch(b.open.batch_id, at(1), "release", "operator")
    b.add(sessions("b"), at(2))
    assert store.get_session("b").batch_id == b.open.batch_id != store.get_session("a").batch_id


def test_a_restarted_batcher_resumes_the_open_batch(store):
    batcher(store).add(sessions("a", "b"), at(0))
    again = batcher(store)
    again.resume()
    (closed,) = again.add(sessions("c"), at(1))
    assert closed.session_count == 3 and {s.session_id for s in store.iter_sessions(closed.batch_id)} == {"a", "b", "c"}


def test_sessions_records_round_trip_and_are_split_by_size():
    originals = sessions(*[f"s{i}" for i in range(50)])
    records = list(encode_sessions(originals, max_bytes=4000))
    assert len(records) > 1
    decoded = [s for r in records for s in parse_batcher_input(r).sessions]
    assert [s.decode() for s in decoded] == originals
    assert [(s.session_id, s.created_at, s.closed_at) for s in decoded] == [
        (s.session_id, s.created_at, s.closed_at) for s in originals]


def test_commands_for_the_batcher_round_trip():
    release = ReleaseRequested(release_id="r", requested_at=at(0))
    assert parse_batcher_input(encode(release)) == release
    assert isinstance(parse_batcher_input(encode(AgeCheck(sent_at=at(0)))), AgeCheck)
    assert isinstance(parse_batcher_input(next(encode_sessions(sessions("x")))), SessionsClosed)
    with pytest.raises(ValueError):
        parse_batcher_input(b'{"kind": "something else"}')


def test_a_session_too_big_for_any_record_is_handed_back_not_sent():
    small, big = make_session("small"), make_session("big", results=200)
    refused = []
    records = list(encode_sessions([small, big], too_big=lambda s, size: refused.append((s.session_id, size)),
                                   max_session_bytes=5000))
    assert [s.session_id for r in records for s in parse_batcher_input(r).sessions] == ["small"]
    assert [sid for sid, _ in refused] == ["big"] and refused[0][1] > 5000


def test_a_takeover_fences_the_earlier_batcher_and_closes_the_batch_it_left_open(store):
    earlier, later = batcher(store, max_sessions=100), batcher(store, max_sessions=100)
    earlier.resume()
    earlier.add(sessions("a"), at(0))
    later.resume()  # a rebalance: the partition moved while `earlier` still ran
    with pytest.raises(StaleBatcher):
        earlier.add(sessions("b"), at(1))
    later.add(sessions("c"), at(2))
    # Two batches came to be open: the next takeover closes the one it does not collect into.
    stale = store.get_open_batch().batch_id
    store.open_batch("b-second-open", at(3))
    store.put_sessions("b-second-open", sessions("d"))
    closed = batcher(store, max_sessions=100).resume(at(4))
    assert [(b.batch_id, b.session_count) for b in closed] == [(stale, 2)]  # "a" and "c"; never "b"
    assert [b.batch_id for b in store.list_batches(BatchStatus.open)] == ["b-second-open"]
