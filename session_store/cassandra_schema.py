"""The Cassandra store's tables and statements: the data model, in one place.

One table per access pattern; every statement names a whole partition key (no scans). The bound
on each table's partitions is stated beside it: Cassandra's advice is to keep a partition under
about 100 MB and 100,000 rows, and nothing here grows with time or traffic past its bound.
``A`` below is the number of distinct sessions with an event per second on one clickstream
partition, ``W`` the open-index bucket width (``ES_CASSANDRA_OPEN_INDEX_BUCKET_S``, 60 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Part of the data model: changing a bucket or shard count re-homes rows, so it is a migration,
# not a setting. (The open index's bucket *width* is a setting: each entry carries its width.)
SESSION_BUCKETS = 16
OPEN_INDEX_SHARDS = 8
SCHEMA_VERSION = 3
MIGRATION_SCOPE = "session_store"
SINGLETON = "all"  # partition key of the tiny one-partition tables (days, current batch, partitions)
# Open-index entries and their bucket list expire after this. An open session is found by the
# idle scan as long as some worker scans its partition within this time of its last event; past
# it the session stays open (its state and events kept, nothing lost) until its next event.
OPEN_INDEX_TTL_S = 30 * 24 * 3600

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    scope text, version int, applied_at timestamp, description text,
    PRIMARY KEY ((scope), version))"""
# ^ bound: one partition, a row per schema version.

# Tables written once per time window and then only read until their rows expire: time-window
# compaction drops whole expired SSTables, and with no deletes in them a short gc_grace is safe.
_TIME_SERIES = (" WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', "
                "'compaction_window_size': 6} AND gc_grace_seconds = 3600")
# Bucket lists: a resurrected forgotten row only costs one extra bucket read, so their range
# tombstones need not outlive an hour.
_BUCKET_LIST = " WITH gc_grace_seconds = 3600"

Step = str | Callable[[Any], None]
"""A migration step: an idempotent CQL statement, or a function of the store (a data backfill)."""

# Each migration is a list of idempotent steps, so a migration cut short is simply re-run.
MIGRATIONS: dict[int, tuple[str, tuple[Step, ...]]] = {
    1: (
        "sessions, batches, open-session state",
        (
            # bound: (batch, bucket) partitions hold ES_BATCH_MAX_SESSIONS / 16 sessions (625 by
            # default; replay batches are cut to the same size), a few MB of session JSON.
            """CREATE TABLE IF NOT EXISTS sessions_by_batch (
                batch_id text, bucket int, session_id text,
                created_us bigint, closed_us bigint, body text,
                PRIMARY KEY ((batch_id, bucket), session_id))""",
            # bound: a row per partition; rows expire after ES_CASSANDRA_SESSION_CLAIM_TTL_S.
            """CREATE TABLE IF NOT EXISTS session_batch (
                session_id text PRIMARY KEY, batch_id text)""",
            # bound: a row per partition (one batch), written only by LWT.
            """CREATE TABLE IF NOT EXISTS batches (
                batch_id text PRIMARY KEY, status text, opened_us bigint, closed_us bigint,
                session_count int, close_reason text, release_id text)""",
            # bound: a row per partition (one release id), written only by LWT.
            """CREATE TABLE IF NOT EXISTS batch_by_release (
                release_id text PRIMARY KEY, batch_id text)""",
            # bound: one partition, a row per day on which a batch opened (365 small rows a year).
            """CREATE TABLE IF NOT EXISTS batch_days (
                scope text, day date,
                PRIMARY KEY ((scope), day)) WITH CLUSTERING ORDER BY (day DESC)""",
            # bound: a partition per day, a row per batch opened that day (batches close by size
            # or by ES_BATCH_MAX_AGE_S: tens to thousands a day).
            """CREATE TABLE IF NOT EXISTS batches_by_day (
                day date, opened_us bigint, batch_id text,
                PRIMARY KEY ((day), opened_us, batch_id)) WITH CLUSTERING ORDER BY (opened_us DESC, batch_id DESC)""",
            # bound: one row, overwritten.
            """CREATE TABLE IF NOT EXISTS current_batch (
                scope text PRIMARY KEY, batch_id text)""",
            # bound: a row per partition (one session): its open state, or its tombstone, which
            # expires after ES_SESSION_TOMBSTONE_TTL_S.
            """CREATE TABLE IF NOT EXISTS open_sessions (
                session_id text PRIMARY KEY, partition int, last_seen_us bigint, closed_us bigint, body text)""",
            # Replaced by the time-bucketed index in version 3 (and dropped there).
            """CREATE TABLE IF NOT EXISTS open_sessions_by_partition (
                partition int, bucket int, session_id text, last_seen_us bigint, closed_us bigint,
                PRIMARY KEY ((partition, bucket), session_id))""",
            # bound: one partition, a row per clickstream partition.
            """CREATE TABLE IF NOT EXISTS open_session_partitions (
                scope text, partition int,
                PRIMARY KEY ((scope), partition))""",
        ),
    ),
    # Whether a closed batch's BatchClosed was acknowledged: a column of the LWT-managed row,
    # set by LWT. (CQL has no ADD IF NOT EXISTS: init_schema treats "already exists" as done.)
    2: ("batch announcements, batcher epoch", (
        "ALTER TABLE batches ADD announced_us bigint",
        # bound: one row, written only by LWT: the newest batcher epoch.
        """CREATE TABLE IF NOT EXISTS batcher (
                scope text PRIMARY KEY, epoch int)""",
    )),
    # The open-session index by time: an idle scan reads only the buckets older than its cutoff
    # that may still hold an open session, instead of every entry of its partitions.
    3: ("time-bucketed open-session and tombstone indexes", (
        # bound: a partition is one clickstream partition x one bucket x one of 8 shards; its rows
        # are the sessions of that partition saved open within the bucket, A * W / 8 (at 60 s, even
        # 10,000 active sessions/s on one partition is 75,000 rows of ~60 bytes, ~5 MB). Written
        # only while its bucket is current, never deleted; rows expire after OPEN_INDEX_TTL_S.
        """CREATE TABLE IF NOT EXISTS open_index (
                partition int, bucket_us bigint, shard int, session_id text, last_seen_us bigint, width_us bigint,
                PRIMARY KEY ((partition, bucket_us, shard), session_id))""" + _TIME_SERIES,
        # bound: a partition per clickstream partition; a row per bucket that may still hold an
        # open session (the buckets of the last session gap, plus any whose session failed to
        # close), at most OPEN_INDEX_TTL_S / W rows of ~20 bytes (43,200 at 60 s) since rows expire.
        """CREATE TABLE IF NOT EXISTS open_index_buckets (
                partition int, bucket_us bigint,
                PRIMARY KEY ((partition), bucket_us))""" + _BUCKET_LIST,
        # bound: as open_index, with the sessions closed within the bucket; rows expire after
        # ES_SESSION_TOMBSTONE_TTL_S, with the tombstones they point at.
        """CREATE TABLE IF NOT EXISTS tombstone_index (
                partition int, bucket_us bigint, shard int, session_id text, closed_us bigint,
                PRIMARY KEY ((partition, bucket_us, shard), session_id))""" + _TIME_SERIES,
        # bound: a row per bucket of the last ES_SESSION_TOMBSTONE_TTL_S, at most TTL / W (10,080
        # at a week and 60 s), rows of ~20 bytes; rows expire.
        """CREATE TABLE IF NOT EXISTS tombstone_index_buckets (
                partition int, bucket_us bigint,
                PRIMARY KEY ((partition), bucket_us))""" + _BUCKET_LIST,
        "backfill_time_index",  # replaced by the store's function of that name (see init_schema)
        "DROP TABLE IF EXISTS open_sessions_by_partition",
    )),
}
BACKFILLS = frozenset({"backfill_time_index"})
"""Migration steps that name a method of the store rather than a CQL statement."""

TABLES = (
    "schema_migrations", "sessions_by_batch", "session_batch", "batches", "batch_by_release", "batch_days",
    "batches_by_day", "current_batch", "open_sessions", "open_session_partitions", "batcher",
    "open_index", "open_index_buckets", "tombstone_index", "tombstone_index_buckets",
)

# Every data statement, prepared once per store. Statements on ``batches``, ``batch_by_release``,
# ``session_batch`` and ``batcher`` carry IF: those tables are never written any other way.
STATEMENTS: dict[str, str] = {
    "schema_versions": "SELECT version FROM schema_migrations WHERE scope = ?",
    "record_migration": "INSERT INTO schema_migrations (scope, version, applied_at, description) VALUES (?, ?, ?, ?)",
    # sessions
    "insert_session": "INSERT INTO sessions_by_batch (batch_id, bucket, session_id, created_us, closed_us, body) "
    "VALUES (?, ?, ?, ?, ?, ?)",
    # LWT: the claim that puts a session in at most one batch, whatever two batchers do.
    "claim_session_batch": "INSERT INTO session_batch (session_id, batch_id) VALUES (?, ?) IF NOT EXISTS USING TTL ?",
    "session_batch": "SELECT batch_id FROM session_batch WHERE session_id = ?",
    "session": "SELECT body FROM sessions_by_batch WHERE batch_id = ? AND bucket = ? AND session_id = ?",
    "bucket_sessions": "SELECT body FROM sessions_by_batch WHERE batch_id = ? AND bucket = ?",
    "bucket_count": "SELECT COUNT(*) FROM sessions_by_batch WHERE batch_id = ? AND bucket = ?",
    # batches (LWT only)
    "open_batch": "INSERT INTO batches (batch_id, status, opened_us, session_count) VALUES (?, 'open', ?, 0) "
    "IF NOT EXISTS",
    "close_batch": "UPDATE batches SET status = 'closed', closed_us = ?, close_reason = ?, release_id = ?, "
    "session_count = ? WHERE batch_id = ? IF status = 'open'",
    "batch": "SELECT batch_id, status, opened_us, closed_us, session_count, close_reason, release_id "
    "FROM batches WHERE batch_id = ?",
    "mark_announced": "UPDATE batches SET announced_us = ? WHERE batch_id = ? IF status = 'closed' AND announced_us = null",
    "batch_announced": "SELECT status, announced_us FROM batches WHERE batch_id = ?",
    "batcher_epoch": "SELECT epoch FROM batcher WHERE scope = ?",
    "first_batcher": "INSERT INTO batcher (scope, epoch) VALUES (?, ?) IF NOT EXISTS",
    "next_batcher": "UPDATE batcher SET epoch = ? WHERE scope = ? IF epoch = ?",
    "claim_release": "INSERT INTO batch_by_release (release_id, batch_id) VALUES (?, ?) IF NOT EXISTS",
    "release_batch": "SELECT batch_id FROM batch_by_release WHERE release_id = ?",
    # batch indexes (plain writes)
    "insert_batch_day": "INSERT INTO batch_days (scope, day) VALUES (?, ?)",
    "batch_days": "SELECT day FROM batch_days WHERE scope = ?",
    "insert_batch_by_day": "INSERT INTO batches_by_day (day, opened_us, batch_id) VALUES (?, ?, ?)",
    "batches_of_day": "SELECT batch_id FROM batches_by_day WHERE day = ?",
    "set_current_batch": "INSERT INTO current_batch (scope, batch_id) VALUES (?, ?)",
    "current_batch": "SELECT batch_id FROM current_batch WHERE scope = ?",
    # open-session states
    "upsert_open_session": "INSERT INTO open_sessions (session_id, partition, last_seen_us, closed_us, body) "
    "VALUES (?, ?, ?, ?, ?)",
    "upsert_tombstone": "INSERT INTO open_sessions (session_id, partition, last_seen_us, closed_us, body) "
    "VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "open_session": "SELECT body FROM open_sessions WHERE session_id = ?",
    # what the scans judge by, without the session's body (up to megabytes of events)
    "open_session_times": "SELECT partition, last_seen_us, closed_us FROM open_sessions WHERE session_id = ?",
    "delete_open_session": "DELETE FROM open_sessions WHERE session_id = ?",
    "insert_open_partition": "INSERT INTO open_session_partitions (scope, partition) VALUES (?, ?)",
    "open_partitions": "SELECT partition FROM open_session_partitions WHERE scope = ?",
    # the open index by last-activity bucket (idle scan)
    "list_open_bucket": "INSERT INTO open_index_buckets (partition, bucket_us) VALUES (?, ?) USING TTL ?",
    "upsert_open_index": "INSERT INTO open_index (partition, bucket_us, shard, session_id, last_seen_us, width_us) "
    "VALUES (?, ?, ?, ?, ?, ?) USING TTL ?",
    "open_buckets": "SELECT bucket_us FROM open_index_buckets WHERE partition = ? AND bucket_us < ?",
    "open_index_shard": "SELECT session_id, last_seen_us, width_us FROM open_index "
    "WHERE partition = ? AND bucket_us = ? AND shard = ?",
    "forget_open_buckets": "DELETE FROM open_index_buckets WHERE partition = ? AND bucket_us >= ? AND bucket_us <= ?",
    # the tombstone index by close bucket (purge)
    "list_tombstone_bucket": "INSERT INTO tombstone_index_buckets (partition, bucket_us) VALUES (?, ?) USING TTL ?",
    "upsert_tombstone_index": "INSERT INTO tombstone_index (partition, bucket_us, shard, session_id, closed_us) "
    "VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "tombstone_buckets": "SELECT bucket_us FROM tombstone_index_buckets WHERE partition = ? AND bucket_us < ?",
    "tombstone_index_shard": "SELECT session_id, closed_us FROM tombstone_index "
    "WHERE partition = ? AND bucket_us = ? AND shard = ?",
    "forget_tombstone_buckets": "DELETE FROM tombstone_index_buckets "
    "WHERE partition = ? AND bucket_us >= ? AND bucket_us <= ?",
}

# Reads of LWT-managed rows that decide something (may a session be written? is the batch
# already closed?) go through Paxos too, so they see every committed or half-committed LWT.
SERIAL_READS = frozenset({"batch", "release_batch", "batch_announced", "batcher_epoch"})

# Read only by the version-3 backfill, from the table it replaces (not prepared with the rest:
# the table is gone once the migration has run).
LEGACY_INDEX_BUCKETS = 16
LEGACY_STATEMENTS: dict[str, str] = {
    "legacy_open_index": "SELECT session_id FROM open_sessions_by_partition WHERE partition = ? AND bucket = ?",
}
