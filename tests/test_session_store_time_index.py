"""The Cassandra store's time-bucketed open-session index: its rules, and its scans' reads.

Not a Cassandra test (the contract suite's Cassandra leg is that, where a cluster is reachable).
The first half checks the pure rules of ``session_store/time_index.py``. The second runs the
store's own open-session code (``CassandraOpenSessions``) over its own CQL statements executed on
in-memory rows (``CqlRows``: each statement's text is parsed against the schema's DDL, so a
column or bind marker out of place fails here), to check what a scan reads and forgets.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from cassandra.query import UNSET_VALUE

from schemas.base import utc_now
from session_store.cassandra_open_sessions import CassandraOpenSessions
from session_store.cassandra_schema import OPEN_INDEX_SHARDS, STATEMENTS
from session_store.time_index import (
    FORGET_MARGIN_US,
    Entry,
    StateTimes,
    TimeBuckets,
    forgettable_runs,
    judge_bucket,
)
from session_store.timestamps import to_micros
from tests.fixtures.stores import make_open_session
from tests.test_session_store_cql import all_tables

MINUTE = 60_000_000


# --- the rules ---------------------------------------------------------------------------------------
def test_buckets_are_aligned_on_the_epoch_and_at_least_a_second_wide():
    buckets = TimeBuckets(MINUTE)
    assert buckets.start(5 * MINUTE + 7) == 5 * MINUTE == buckets.start(5 * MINUTE)
    with pytest.raises(ValueError):
        TimeBuckets(999_999)


def test_a_bucket_hands_out_the_open_sessions_it_owns_that_went_quiet_and_stays_unsettled():
    entries = [Entry("quiet", 10, MINUTE), Entry("recent", 50, MINUTE)]
    states = {"quiet": StateTimes(0, 10, None)}
    verdict = judge_bucket(0, 0, entries, states, before_us=40)
    assert verdict.idle == ["quiet"]
    assert not verdict.settled  # settled only once a later scan finds them closed


def test_stale_closed_missing_or_foreign_entries_settle_a_bucket():
    entries = [Entry("moved", 10, MINUTE), Entry("closed", 10, MINUTE), Entry("gone", 10, MINUTE),
               Entry("foreign", 10, MINUTE)]
    states = {
        "moved": StateTimes(0, MINUTE + 5, None),  # seen again: the next bucket owns it
        "closed": StateTimes(0, 10, 20),
        "foreign": StateTimes(3, 10, None),
    }
    verdict = judge_bucket(0, 0, entries, states, before_us=2 * MINUTE)
    assert verdict.idle == [] and verdict.settled


def test_a_save_cut_short_after_its_index_entry_loses_nothing():
    # The entry in the new bucket was written, the state (still in the old bucket) was not.
    state = {"s": StateTimes(0, 10, None)}
    new_bucket = judge_bucket(0, MINUTE, [Entry("s", MINUTE + 5, MINUTE)], state, before_us=3 * MINUTE)
    old_bucket = judge_bucket(0, 0, [Entry("s", 10, MINUTE)], state, before_us=3 * MINUTE)
    assert new_bucket.idle == [] and new_bucket.settled
    assert old_bucket.idle == ["s"] and not old_bucket.settled


def test_an_entry_seen_after_the_cutoff_keeps_its_bucket_without_reading_its_state():
    verdict = judge_bucket(0, 0, [Entry("s", 50, MINUTE)], {}, before_us=40)
    assert verdict.idle == [] and not verdict.settled


def test_settled_buckets_are_forgotten_in_runs_up_to_the_limit():
    listed = [(0, True, 1), (1, True, 2), (2, False, 3), (3, True, 4), (4, True, 5), (5, True, 6)]
    assert forgettable_runs(listed, limit_us=5) == [(0, 1), (3, 4)]
    assert forgettable_runs(listed, limit_us=0) == []
    assert forgettable_runs([], limit_us=10) == []


# --- the store's statements on in-memory rows -------------------------------------------------------
class CqlRows:
    """Runs the store's statements (the subset the open-session code uses) on dicts of rows keyed
    by each table's primary key, recording every partition read and every TTL written."""

    def __init__(self) -> None:
        self.tables = all_tables()
        self.rows: dict[str, dict[tuple, dict[str, Any]]] = defaultdict(dict)
        self.reads: list[tuple[str, tuple]] = []
        self.ttls: dict[str, set[int]] = defaultdict(set)
        self.fail: set[str] = set()

    def execute(self, name: str, params: Any, **_: Any) -> SimpleNamespace:
        if name in self.fail:
            raise RuntimeError(f"injected failure of {name}")
        cql, values = STATEMENTS[name], list(params)
        if m := re.fullmatch(r"INSERT INTO (\w+) \(([^)]*)\) VALUES \(([^)]*)\)( USING TTL \?)?", cql):
            table, columns, markers, ttl = m.groups()
            names = [c.strip() for c in columns.split(",")]
            assert [v.strip() for v in markers.split(",")] == ["?"] * len(names), cql
            row = dict(zip(names, values))
            if ttl:
                assert isinstance(values[len(names)], int) and values[len(names)] > 0, (name, values)
                self.ttls[table].add(values[len(names)])
            assert len(values) == len(names) + bool(ttl), (name, values)
            stored = self.rows[table].setdefault(self._key(table, row), {})
            stored.update({k: v for k, v in row.items() if v is not UNSET_VALUE})
            return _result([])
        if m := re.fullmatch(r"SELECT (.+) FROM (\w+) WHERE (.+)", cql):
            selected, table, where = m.groups()
            matches = self._where(table, where, values)
            self.reads.append((table, tuple(values)))
            wanted = [c.strip() for c in selected.split(",")]
            return _result([SimpleNamespace(**{c: row.get(c) for c in wanted}) for _, row in matches])
        if m := re.fullmatch(r"DELETE FROM (\w+) WHERE (.+)", cql):
            table, where = m.groups()
            for key, _ in self._where(table, where, values):
                del self.rows[table][key]
            return _result([])
        raise AssertionError(f"not a statement of the open-session code: {name}")

    def execute_many(self, name: str, params: Any) -> list[SimpleNamespace]:
        return [self.execute(name, p) for p in params]

    def pages(self, name: str, params: Any, page_size: int) -> Any:
        return iter(self.execute(name, params).current_rows)

    def _key(self, table: str, row: dict[str, Any]) -> tuple:
        spec = self.tables[table]
        return tuple(row[c] for c in spec.partition_key + spec.clustering)

    def _where(self, table: str, where: str, values: list[Any]) -> list[tuple[tuple, dict[str, Any]]]:
        tests = []
        for part, value in zip(where.split(" AND "), values, strict=True):
            column, op, marker = part.split()
            assert marker == "?", where
            tests.append((column, op, value))
        spec = self.tables[table]
        assert set(spec.partition_key) <= {c for c, op, _ in tests if op == "="}, f"{table}: a scan"
        ops = {"=": lambda a, b: a == b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
               ">=": lambda a, b: a >= b}
        found = [(key, row) for key, row in self.rows[table].items()
                 if all(ops[op](row[column], value) for column, op, value in tests)]
        return sorted(found, key=lambda item: item[0])

    def listed(self, table: str, partition: int) -> list[int]:
        return sorted(row["bucket_us"] for row in self.rows[table].values() if row["partition"] == partition)

    def index_reads(self) -> set[int]:
        """The buckets whose open-index partitions were read (one read per shard)."""
        return {params[1] for table, params in self.reads if table == "open_index"}


def _result(rows: list[Any]) -> SimpleNamespace:
    return SimpleNamespace(current_rows=rows, one=lambda: rows[0] if rows else None, paging_state=None,
                           __iter__=lambda: iter(rows))


@pytest.fixture
def rows() -> CqlRows:
    return CqlRows()


@pytest.fixture
def states(rows: CqlRows) -> CassandraOpenSessions:
    return CassandraOpenSessions(rows, bucket_width_s=60, tombstone_ttl_s=3600)


def _open(session_id: str, minutes_ago: float, partition: int = 0):
    """An open state last seen ``minutes_ago`` minutes before now (the store's clock matters: a
    bucket is forgotten only once it ended FORGET_MARGIN_US ago)."""
    state = make_open_session(session_id, partition=partition, last_seen=0)
    seen = utc_now() - timedelta(minutes=minutes_ago)
    return state.model_copy(update={"last_seen_at": seen, "last_event_at": seen})


def _closed(state, minutes_ago: float):
    return state.model_copy(update={"closed_at": utc_now() - timedelta(minutes=minutes_ago)})


def _scan(states: CassandraOpenSessions, minutes_ago: float, partitions=(0,)) -> list[str]:
    return sorted(s.session_id for s in states.iter_idle(list(partitions), utc_now() - timedelta(minutes=minutes_ago)))


def test_a_scan_reads_only_the_listed_buckets_before_its_cutoff(rows: CqlRows, states: CassandraOpenSessions):
    # Two hours of sessions, one bucket a minute, all of them closed except three.
    history = [_open(f"s{m:03d}", minutes_ago=m + 0.5) for m in range(120)]
    states.save(history)
    states.save([_closed(s, 1) for s in history if s.session_id not in {"s010", "s060", "s100"}])
    cutoff = utc_now() - timedelta(minutes=30)
    bucket = TimeBuckets(MINUTE).start
    before_cutoff = {b for b in (bucket(to_micros(s.last_seen_at)) for s in history) if b <= to_micros(cutoff)}

    assert sorted(s.session_id for s in states.iter_idle([0], cutoff)) == ["s060", "s100"]  # s010: within the gap
    assert rows.index_reads() == before_cutoff  # every bucket up to the cutoff's, as it was never scanned

    rows.reads.clear()
    # Their closes were lost: they are handed out again. The buckets found settled were forgotten
    # by the first scan: only the two still owning an open session, and the one the cutoff falls
    # in, are read again (each of its shards once), nothing else of the two hours.
    assert sorted(s.session_id for s in states.iter_idle([0], cutoff)) == ["s060", "s100"]
    owning = {bucket(to_micros(s.last_seen_at)) for s in history if s.session_id in {"s060", "s100"}}
    assert rows.index_reads() == owning | {bucket(to_micros(cutoff))}
    assert sum(1 for table, _ in rows.reads if table == "open_index") == 3 * OPEN_INDEX_SHARDS


def test_a_bucket_is_forgotten_only_after_its_idle_sessions_are_closed(rows: CqlRows, states: CassandraOpenSessions):
    quiet = _open("quiet", minutes_ago=40)
    states.save([quiet])
    assert _scan(states, minutes_ago=30) == ["quiet"]
    assert len(rows.listed("open_index_buckets", 0)) == 1  # handed out, not closed yet: kept
    states.save([_closed(quiet, 0)])
    assert _scan(states, minutes_ago=30) == []
    assert rows.listed("open_index_buckets", 0) == []


def test_a_session_seen_again_moves_to_the_new_bucket_without_a_delete(rows: CqlRows, states: CassandraOpenSessions):
    early = _open("s", minutes_ago=50)
    states.save([early])
    again = _open("s", minutes_ago=20)
    states.save([again])
    assert len(rows.rows["open_index"]) == 2  # the old entry went stale; nothing was deleted
    assert _scan(states, minutes_ago=30) == []  # the old bucket no longer owns it
    assert _scan(states, minutes_ago=10) == ["s"]


def test_recent_buckets_stay_listed_for_the_margin_whatever_the_cutoff(rows: CqlRows, states: CassandraOpenSessions):
    # A scan cutoff in the future (a tiny gap) must not forget a bucket still being written to.
    closed = _closed(_open("s", minutes_ago=1), 0)
    states.save([_open("s", minutes_ago=1)])
    states.save([closed])
    assert _scan(states, minutes_ago=-5) == []
    assert len(rows.listed("open_index_buckets", 0)) == 1
    assert FORGET_MARGIN_US > 5 * MINUTE


def test_a_save_that_fails_before_the_state_keeps_the_old_state_findable(rows: CqlRows, states: CassandraOpenSessions):
    states.save([_open("s", minutes_ago=50)])
    rows.fail.add("upsert_open_session")
    with pytest.raises(RuntimeError):
        states.save([_open("s", minutes_ago=20)])  # index written, state not
    rows.fail.clear()
    assert _scan(states, minutes_ago=30) == ["s"]


def test_each_partition_is_scanned_in_its_own_buckets(rows: CqlRows, states: CassandraOpenSessions):
    states.save([_open("p0", 40, partition=0), _open("p1", 40, partition=1), _open("p2", 40, partition=2)])
    assert _scan(states, 30, partitions=[0, 2]) == ["p0", "p2"]
    assert {params[0] for table, params in rows.reads if table in ("open_index", "open_index_buckets")} == {0, 2}


def test_tombstones_are_purged_by_their_close_bucket_and_expire_by_ttl(rows: CqlRows, states: CassandraOpenSessions):
    old = _closed(_open("old", 90), 80)
    new = _closed(_open("new", 90), 5)
    states.save([old, new, _open("open", 90)])
    assert rows.ttls["open_sessions"] == {3600} and rows.ttls["tombstone_index"] == {3600}
    assert states.purge(utc_now() - timedelta(minutes=60)) == 1
    assert set(states.load(["old", "new", "open"])) == {"new", "open"}
    assert states.purge(utc_now() - timedelta(minutes=60)) == 0
    assert len(rows.listed("tombstone_index_buckets", 0)) == 1  # the purged bucket is forgotten


def test_a_scan_given_up_half_way_forgets_nothing(rows: CqlRows, states: CassandraOpenSessions):
    states.save([_open(f"s{i}", minutes_ago=40 + i) for i in range(3)])
    listed = rows.listed("open_index_buckets", 0)
    scan = states.iter_idle([0], utc_now() - timedelta(minutes=30))
    next(scan)
    scan.close()
    assert rows.listed("open_index_buckets", 0) == listed
