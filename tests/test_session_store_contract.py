"""The session store contract: every implementation must pass every test here.

Each test runs once per store (see ``session_store`` in tests/fixtures/stores.py); the Cassandra
leg runs only where ES_CASSANDRA_CONTACT_POINTS names a cluster.
"""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from schemas.sessions import BatchStatus, StoredSession
from session_store import (
    BatchNotClosed,
    BatchNotFound,
    BatchNotOpen,
    ReleaseConflict,
    SessionStore,
    StaleBatcher,
)
from tests.fixtures.stores import at, make_open_session, make_session


def ids(sessions) -> list[str]:
    return [s.session_id for s in sessions]


# --- writing sessions ------------------------------------------------------------------------------
def test_writing_the_same_sessions_again_changes_nothing(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    assert session_store.put_sessions("b1", [make_session("s1"), make_session("s2")]) == 2
    assert session_store.put_sessions("b1", [make_session("s1"), make_session("s2")]) == 0
    assert session_store.count_sessions("b1") == 2


def test_a_session_repeated_within_one_call_is_stored_once(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    assert session_store.put_sessions("b1", [make_session("s1"), make_session("s1"), make_session("s2")]) == 2
    assert sorted(ids(session_store.iter_sessions("b1"))) == ["s1", "s2"]


def test_a_session_stays_in_the_first_batch_it_was_written_to(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    session_store.put_sessions("b1", [make_session("s1")])
    session_store.close_batch("b1", at(10), "size")
    session_store.open_batch("b2", at(11))

    assert session_store.put_sessions("b2", [make_session("s1", clicks=5), make_session("s2")]) == 1

    assert session_store.get_session("s1").batch_id == "b1"
    assert session_store.get_session("s1").events == make_session("s1").events  # not the re-sent version
    assert ids(session_store.iter_sessions("b2")) == ["s2"]
    assert session_store.count_sessions("b2") == 1


def test_first_batch_wins_even_while_both_batches_are_open(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    session_store.open_batch("b2", at(1))
    session_store.put_sessions("b1", [make_session("s1")])
    assert session_store.put_sessions("b2", [make_session("s1")]) == 0
    assert session_store.count_sessions("b2") == 0


def test_sessions_cannot_be_written_to_a_closed_or_unknown_batch(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    session_store.close_batch("b1", at(10), "age")
    with pytest.raises(BatchNotOpen):
        session_store.put_sessions("b1", [make_session("s1")])
    with pytest.raises(BatchNotFound):
        session_store.put_sessions("nope", [make_session("s1")])
    assert session_store.get_session("s1") is None


def test_thousands_of_sessions_go_in_one_call(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    sessions = [make_session(f"s{i:05d}", results=2, clicks=0) for i in range(3000)]
    assert session_store.put_sessions("b1", sessions) == 3000
    assert session_store.count_sessions("b1") == 3000


def test_thousands_of_open_session_states_go_in_and_out_in_one_call(session_store: SessionStore):
    states = [make_open_session(f"o{i:05d}", partition=i % 4, last_seen=i % 50) for i in range(3000)]
    session_store.save_open_sessions(states)
    loaded = session_store.load_open_sessions(s.session_id for s in states)
    assert loaded == {s.session_id: s for s in states}


# --- reading sessions --------------------------------------------------------------------------------
def test_a_stored_session_reads_back_equal_with_utc_times(session_store: SessionStore):
    original = make_session("s1", results=4, clicks=2)
    session_store.open_batch("b1", at(0))
    session_store.put_sessions("b1", [original])

    stored = session_store.get_session("s1")

    assert stored == StoredSession(**original.model_dump(), batch_id="b1")
    assert stored.created_at.tzinfo == timezone.utc
    assert stored.created_at.microsecond == 123456
    assert list(session_store.iter_sessions("b1")) == [stored]


def test_an_unknown_session_or_batch_reads_as_nothing(session_store: SessionStore):
    assert session_store.get_session("nope") is None
    assert list(session_store.iter_sessions("nope")) == []
    assert session_store.count_sessions("nope") == 0


def test_iter_sessions_yields_every_session_once_in_a_stable_order_across_pages(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    session_store.open_batch("other", at(1))
    written = [f"s{i:03d}" for i in range(53)]
    session_store.put_sessions("b1", [make_session(i, results=1) for i in written])
    session_store.put_sessions("other", [make_session(f"x{i}") for i in range(5)])

    small_pages = ids(session_store.iter_sessions("b1", page_size=10))
    odd_pages = ids(session_store.iter_sessions("b1", page_size=7))
    one_page = ids(session_store.iter_sessions("b1", page_size=500))

    assert sorted(small_pages) == written
    assert small_pages == odd_pages == one_page


# --- batches --------------------------------------------------------------------------------------------
def test_opening_a_batch_again_returns_it_unchanged(session_store: SessionStore):
    first = session_store.open_batch("b1", at(0))
    assert first.status is BatchStatus.open and first.opened_at == at(0) and first.session_count == 0
    assert session_store.open_batch("b1", at(99)) == first
    assert session_store.get_batch("b1") == first


def test_a_batch_closes_exactly_once(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    session_store.put_sessions("b1", [make_session("s1"), make_session("s2")])

    closed = session_store.close_batch("b1", at(10), "release", release_id="r1")

    assert closed.status is BatchStatus.closed
    assert (closed.closed_at, closed.close_reason, closed.release_id, closed.session_count) == (at(10), "release", "r1", 2)
    assert session_store.close_batch("b1", at(20), "release", release_id="r1") == closed
    assert session_store.close_batch("b1", at(30), "age", release_id="r2") == closed
    assert session_store.close_batch("b1", at(40), "size") == closed
    assert session_store.get_batch("b1") == closed


def test_a_batch_is_found_by_the_release_that_closed_it(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    closed = session_store.close_batch("b1", at(10), "release", release_id="r1")
    session_store.close_batch("b1", at(20), "release", release_id="r2")  # no effect: already closed

    assert session_store.find_batch_by_release("r1") == closed
    assert session_store.find_batch_by_release("r2") is None


def test_a_release_id_cannot_close_a_second_batch(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    session_store.close_batch("b1", at(10), "release", release_id="r1")
    session_store.open_batch("b2", at(11))

    with pytest.raises(ReleaseConflict):
        session_store.close_batch("b2", at(20), "release", release_id="r1")
    assert session_store.get_batch("b2").status is BatchStatus.open


def test_closing_an_unknown_batch_fails(session_store: SessionStore):
    with pytest.raises(BatchNotFound):
        session_store.close_batch("nope", at(0), "size")
    assert session_store.get_batch("nope") is None


def test_the_open_batch_is_the_one_being_collected(session_store: SessionStore):
    assert session_store.get_open_batch() is None
    opened = session_store.open_batch("b1", at(0))
    assert session_store.get_open_batch() == opened
    session_store.close_batch("b1", at(10), "size")
    assert session_store.get_open_batch() is None
    assert session_store.open_batch("b2", at(11)) == session_store.get_open_batch()


def test_batches_are_listed_newest_first_and_filtered_by_status(session_store: SessionStore):
    day = timedelta(days=1).total_seconds()
    for batch_id, opened in [("b1", 0), ("b2", day), ("b3", day + 60), ("b4", 3 * day)]:
        session_store.open_batch(batch_id, at(opened))
    session_store.close_batch("b1", at(10), "size")
    session_store.close_batch("b3", at(day + 120), "age")

    assert ids_of(session_store.list_batches()) == ["b4", "b3", "b2", "b1"]
    assert ids_of(session_store.list_batches(limit=2)) == ["b4", "b3"]
    assert ids_of(session_store.list_batches(status=BatchStatus.closed)) == ["b3", "b1"]
    assert ids_of(session_store.list_batches(status=BatchStatus.open, limit=1)) == ["b4"]
    assert session_store.list_batches(status=BatchStatus.closed)[0] == session_store.get_batch("b3")


def ids_of(batches) -> list[str]:
    return [b.batch_id for b in batches]


# --- open-session state ----------------------------------------------------------------------------------
def test_open_session_states_are_saved_and_loaded_by_id(session_store: SessionStore):
    states = [
        make_open_session("a", partition=0, last_seen=10),
        make_open_session("b", partition=1, last_seen=20),
        make_open_session("t", partition=0, last_seen=5, closed=6),
    ]
    session_store.save_open_sessions(states)

    loaded = session_store.load_open_sessions(["a", "t", "missing", "a"])

    assert loaded == {"a": states[0], "t": states[2]}
    assert loaded["a"].last_seen_at.tzinfo == timezone.utc


def test_saving_a_state_again_replaces_it(session_store: SessionStore):
    session_store.save_open_sessions([make_open_session("a", partition=0, last_seen=10)])
    newer = make_open_session("a", partition=0, last_seen=50)
    session_store.save_open_sessions([newer])
    assert session_store.load_open_sessions(["a"]) == {"a": newer}


def test_idle_scan_returns_open_sessions_of_the_given_partitions_seen_before_the_time(session_store: SessionStore):
    session_store.save_open_sessions([
        make_open_session("idle-p0", partition=0, last_seen=10),
        make_open_session("busy-p0", partition=0, last_seen=100),
        make_open_session("idle-p1", partition=1, last_seen=10),
        make_open_session("idle-p2", partition=2, last_seen=10),
        make_open_session("closed-p0", partition=0, last_seen=10, closed=11),
    ])

    assert ids(session_store.iter_idle_open_sessions([0], at(50))) == ["idle-p0"]
    assert sorted(ids(session_store.iter_idle_open_sessions([0, 1], at(50)))) == ["idle-p0", "idle-p1"]
    assert sorted(ids(session_store.iter_idle_open_sessions([0], at(1000)))) == ["busy-p0", "idle-p0"]
    assert list(session_store.iter_idle_open_sessions([0], at(10))) == []  # strictly before
    assert list(session_store.iter_idle_open_sessions([], at(1000))) == []


def test_a_session_seen_again_or_closed_is_no_longer_idle(session_store: SessionStore):
    session_store.save_open_sessions([
        make_open_session("a", partition=0, last_seen=10),
        make_open_session("b", partition=0, last_seen=10),
    ])
    session_store.save_open_sessions([
        make_open_session("a", partition=0, last_seen=80),
        make_open_session("b", partition=0, last_seen=10, closed=60),  # a tombstone
    ])
    assert list(session_store.iter_idle_open_sessions([0], at(50))) == []
    assert session_store.load_open_sessions(["b"])["b"].closed_at == at(60)


def test_idle_scans_find_quiet_sessions_across_many_minutes_again_and_again_until_closed(
    session_store: SessionStore,
):
    # Last seen minutes apart (on Cassandra: in different time buckets), scanned repeatedly as
    # the sessionizer does; a scan must neither lose a session it handed out before nor keep one
    # that was closed or seen again.
    session_store.save_open_sessions([
        make_open_session(f"s{minute}", partition=0, last_seen=minute * 60 + 5) for minute in range(6)
    ])
    assert sorted(ids(session_store.iter_idle_open_sessions([0], at(3000)))) == [f"s{m}" for m in range(6)]
    assert sorted(ids(session_store.iter_idle_open_sessions([0], at(3000)))) == [f"s{m}" for m in range(6)]

    session_store.save_open_sessions([
        make_open_session("s0", partition=0, last_seen=5, closed=3000),
        make_open_session("s2", partition=0, last_seen=125, closed=3000),
        make_open_session("s4", partition=0, last_seen=3500),  # seen again, long after
    ])
    assert sorted(ids(session_store.iter_idle_open_sessions([0], at(3000)))) == ["s1", "s3", "s5"]
    assert sorted(ids(session_store.iter_idle_open_sessions([0], at(4000)))) == ["s1", "s3", "s4", "s5"]
    assert ids(session_store.iter_idle_open_sessions([0], at(150))) == ["s1"]


def test_purge_forgets_only_tombstones_closed_before_the_time(session_store: SessionStore):
    session_store.save_open_sessions([
        make_open_session("old-tombstone", partition=0, last_seen=10, closed=20),
        make_open_session("new-tombstone", partition=1, last_seen=10, closed=200),
        make_open_session("open", partition=0, last_seen=10),
    ])

    assert session_store.purge_tombstones(at(100)) == 1

    assert set(session_store.load_open_sessions(["old-tombstone", "new-tombstone", "open"])) == {"new-tombstone", "open"}
    assert session_store.purge_tombstones(at(100)) == 0
    assert ids(session_store.iter_idle_open_sessions([0], at(50))) == ["open"]


def test_empty_calls_are_harmless(session_store: SessionStore):
    session_store.open_batch("b1", at(0))
    assert session_store.put_sessions("b1", []) == 0
    session_store.save_open_sessions([])
    assert session_store.load_open_sessions([]) == {}


# --- announcements -------------------------------------------------------------------------------
def test_closed_batches_are_unannounced_oldest_close_first_until_marked(session_store: SessionStore):
    for name, closed_at in (("b-late", 30), ("b-early", 10), ("b-mid", 20)):
        session_store.open_batch(name, at(0))
        session_store.close_batch(name, at(closed_at), "size")
    session_store.open_batch("b-open", at(40))
    assert ids_of(session_store.list_unannounced()) == ["b-early", "b-mid", "b-late"]

    assert session_store.mark_announced("b-mid", at(50)) is True
    assert session_store.mark_announced("b-mid", at(60)) is False  # marked once; a repeat says so
    assert ids_of(session_store.list_unannounced()) == ["b-early", "b-late"]
    assert ids_of(session_store.list_unannounced(limit=1)) == ["b-early"]


def test_only_a_closed_batch_can_be_marked_announced(session_store: SessionStore):
    session_store.open_batch("b-open", at(0))
    with pytest.raises(BatchNotClosed):
        session_store.mark_announced("b-open", at(1))
    with pytest.raises(BatchNotFound):
        session_store.mark_announced("b-nowhere", at(1))
    assert session_store.list_unannounced() == []


def ids_of(batches) -> list[str]:
    return [b.batch_id for b in batches]


# --- one writer per batch -----------------------------------------------------------------------
def test_a_stale_batcher_epoch_is_refused_and_writes_nothing(session_store: SessionStore):
    old = session_store.claim_batcher()
    session_store.open_batch("b1", at(0))
    assert session_store.put_sessions("b1", [make_session("s1")], epoch=old) == 1
    new = session_store.claim_batcher()
    assert new > old
    with pytest.raises(StaleBatcher):
        session_store.put_sessions("b1", [make_session("s2")], epoch=old)
    with pytest.raises(StaleBatcher):
        session_store.close_batch("b1", at(5), "size", epoch=old)
    assert session_store.get_session("s2") is None and session_store.get_batch("b1").status is BatchStatus.open
    assert session_store.put_sessions("b1", [make_session("s2")], epoch=new) == 1
    assert session_store.close_batch("b1", at(6), "size", epoch=new).session_count == 2
