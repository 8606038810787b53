"""The session store on Apache Cassandra (cassandra-driver 3.30).

Data model, one table per access pattern (every query names a whole partition key):

- ``sessions_by_batch ((batch_id, bucket), session_id)`` holds the sessions. ``bucket`` is a
  stable hash of the session id modulo ``SESSION_BUCKETS``, so a 10,000-session batch is 16
  partitions of a few MB instead of one wide one; the trainer reads them bucket by bucket.
- ``session_batch (session_id)`` says which batch a session went to: the "first batch wins" check
  and ``get_session``'s way in.
- ``batches (batch_id)`` is the batch state machine, written *only* with lightweight transactions
  (Paxos): opened with ``INSERT ... IF NOT EXISTS``, closed with ``UPDATE ... IF status = 'open'``.
  Mixing plain writes into LWT-managed rows breaks their ordering guarantees, so everything
  listing-related lives in separate, plainly written tables.
- ``batch_by_release (release_id)`` claims a release id for one batch, also by LWT.
- ``batch_days`` + ``batches_by_day`` list batches newest first without a table scan;
  ``current_batch`` points at the batch being collected. These are indexes: the authoritative
  state is always re-read from ``batches``.
- ``open_sessions (session_id)`` keeps the sessionizer's state, looked up by id;
  ``open_sessions_by_partition ((partition, bucket), session_id)`` is its slim index for the
  idle scan, which then only reads the partitions a worker owns, in bounded chunks.

Consistency: LOCAL_QUORUM for reads and writes, LOCAL_SERIAL for the Paxos phase of LWTs and for
reads of LWT-managed rows on a decision path, token-aware routing within the local DC.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote

from schemas.sessions import (
    BatchCloseReason,
    BatchRecord,
    BatchStatus,
    ClosedSession,
    OpenSession,
    StoredSession,
)
from session_store.base import (
    BatchNotClosed,
    BatchNotFound,
    BatchNotOpen,
    ReleaseConflict,
    SessionStore,
    StaleBatcher,
    StoreNotInitialised,
)
from cassandra.query import UNSET_VALUE

from session_store.factory import redact_url
from session_store.records import open_session, open_session_body, session_body, stable_bucket, stored_session
from session_store.timestamps import from_micros, to_micros

log = logging.getLogger(__name__)

DEFAULT_PORT = 9042
DEFAULT_KEYSPACE = "embedding_studio"
# Part of the data model: changing a bucket count re-homes every row, so it is a migration, not a
# setting.
SESSION_BUCKETS = 16
OPEN_STATE_BUCKETS = 16
SCHEMA_VERSION = 2
_MIGRATION_SCOPE = "session_store"
_SINGLETON = "all"  # partition key of the tiny one-partition tables (days, current batch, partitions)
# A closed session's state (its tombstone) expires by itself after this: late events for it are
# recognised as late for a week (ES_SESSION_TOMBSTONE_TTL_S's default), and no purge scan or
# delete (a Cassandra tombstone of its own) is needed. Bounds the open-state tables to the open
# sessions plus a week of closed ones.
TOMBSTONE_TTL_S = 7 * 24 * 3600
_CONCURRENCY = 64
_SCAN_PAGE = 1000
_HOST = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>\d+))?")
_KEYSPACE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    scope text, version int, applied_at timestamp, description text,
    PRIMARY KEY ((scope), version))"""

# Each migration is a list of idempotent statements, so a migration cut short is simply re-run.
MIGRATIONS: dict[int, tuple[str, tuple[str, ...]]] = {
    1: (
        "sessions, batches, open-session state",
        (
            """CREATE TABLE IF NOT EXISTS sessions_by_batch (
                batch_id text, bucket int, session_id text,
                created_us bigint, closed_us bigint, body text,
                PRIMARY KEY ((batch_id, bucket), session_id))""",
            """CREATE TABLE IF NOT EXISTS session_batch (
                session_id text PRIMARY KEY, batch_id text)""",
            """CREATE TABLE IF NOT EXISTS batches (
                batch_id text PRIMARY KEY, status text, opened_us bigint, closed_us bigint,
                session_count int, close_reason text, release_id text)""",
            """CREATE TABLE IF NOT EXISTS batch_by_release (
                release_id text PRIMARY KEY, batch_id text)""",
            """CREATE TABLE IF NOT EXISTS batch_days (
                scope text, day date,
                PRIMARY KEY ((scope), day)) WITH CLUSTERING ORDER BY (day DESC)""",
            """CREATE TABLE IF NOT EXISTS batches_by_day (
                day date, opened_us bigint, batch_id text,
                PRIMARY KEY ((day), opened_us, batch_id)) WITH CLUSTERING ORDER BY (opened_us DESC, batch_id DESC)""",
            """CREATE TABLE IF NOT EXISTS current_batch (
                scope text PRIMARY KEY, batch_id text)""",
            """CREATE TABLE IF NOT EXISTS open_sessions (
                session_id text PRIMARY KEY, partition int, last_seen_us bigint, closed_us bigint, body text)""",
            """CREATE TABLE IF NOT EXISTS open_sessions_by_partition (
                partition int, bucket int, session_id text, last_seen_us bigint, closed_us bigint,
                PRIMARY KEY ((partition, bucket), session_id))""",
            """CREATE TABLE IF NOT EXISTS open_session_partitions (
                scope text, partition int,
                PRIMARY KEY ((scope), partition))""",
        ),
    ),
    # Whether a closed batch's BatchClosed was acknowledged: a column of the LWT-managed row,
    # set by LWT. (CQL has no ADD IF NOT EXISTS: init_schema treats "already exists" as done.)
    2: ("batch announcements, batcher epoch", (
        "ALTER TABLE batches ADD announced_us bigint",
        # One row, written only by LWT: the newest batcher epoch.
        """CREATE TABLE IF NOT EXISTS batcher (
                scope text PRIMARY KEY, epoch int)""",
    )),
}
# Closed batches a takeover looks at for missing announcements, newest first: a batch older than
# the newest thousand closed ones was announced, or marked, long ago.
UNANNOUNCED_SCAN = 1000

TABLES = (
    "schema_migrations", "sessions_by_batch", "session_batch", "batches", "batch_by_release", "batch_days",
    "batches_by_day", "current_batch", "open_sessions", "open_sessions_by_partition", "open_session_partitions",
    "batcher",
)

# Every data statement, prepared once per store. Statements on ``batches`` and
# ``batch_by_release`` carry IF: those tables are never written any other way.
STATEMENTS: dict[str, str] = {
    "schema_versions": "SELECT version FROM schema_migrations WHERE scope = ?",
    "record_migration": "INSERT INTO schema_migrations (scope, version, applied_at, description) VALUES (?, ?, ?, ?)",
    # sessions
    "insert_session": "INSERT INTO sessions_by_batch (batch_id, bucket, session_id, created_us, closed_us, body) "
    "VALUES (?, ?, ?, ?, ?, ?)",
    # LWT: the claim that puts a session in at most one batch, whatever two batchers do.
    "claim_session_batch": "INSERT INTO session_batch (session_id, batch_id) VALUES (?, ?) IF NOT EXISTS",
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
    # open sessions
    "upsert_open_session": "INSERT INTO open_sessions (session_id, partition, last_seen_us, closed_us, body) "
    "VALUES (?, ?, ?, ?, ?)",
    "upsert_open_index": "INSERT INTO open_sessions_by_partition (partition, bucket, session_id, last_seen_us, "
    "closed_us) VALUES (?, ?, ?, ?, ?)",
    "upsert_tombstone": "INSERT INTO open_sessions (session_id, partition, last_seen_us, closed_us, body) "
    "VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "upsert_tombstone_index": "INSERT INTO open_sessions_by_partition (partition, bucket, session_id, last_seen_us, "
    "closed_us) VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "open_session": "SELECT body FROM open_sessions WHERE session_id = ?",
    "open_index_bucket": "SELECT session_id, last_seen_us, closed_us FROM open_sessions_by_partition "
    "WHERE partition = ? AND bucket = ?",
    "delete_open_session": "DELETE FROM open_sessions WHERE session_id = ?",
    "delete_open_index": "DELETE FROM open_sessions_by_partition WHERE partition = ? AND bucket = ? AND session_id = ?",
    "insert_open_partition": "INSERT INTO open_session_partitions (scope, partition) VALUES (?, ?)",
    "open_partitions": "SELECT partition FROM open_session_partitions WHERE scope = ?",
}

# Reads of LWT-managed rows that decide something (may a session be written? is the batch
# already closed?) go through Paxos too, so they see every committed or half-committed LWT.
_SERIAL_READS = frozenset({"batch", "release_batch", "batch_announced", "batcher_epoch"})


@dataclass(frozen=True)
class CassandraUrl:
    hosts: tuple[str, ...]
    port: int
    keyspace: str
    local_dc: str | None
    username: str | None
    password: str | None
    replication_factor: int

    def redacted(self) -> str:
        auth = f"{self.username}:***@" if self.username else ""
        dc = f"?dc={self.local_dc}" if self.local_dc else ""
        return f"cassandra://{auth}{','.join(self.hosts)}:{self.port}/{self.keyspace}{dc}"


def parse_cassandra_url(url: str) -> CassandraUrl:
    """``cassandra://[user:password@]host1,host2[:port]/keyspace?dc=DC[&rf=N]``.

    One port for all hosts (the driver connects to every node on the same port). ``rf`` is the
    replication factor used only when ``init_schema`` creates the keyspace (default 1; say 3 in
    production)."""
    shown = redact_url(url)  # error messages must not leak the password
    scheme, sep, rest = url.partition("://")
    if scheme != "cassandra" or not sep:
        raise ValueError(f"not a Cassandra store URL: {shown!r}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, _, secret = credentials.partition(":")
        username, password = unquote(user), unquote(secret)
    hosts: list[str] = []
    ports: set[int] = set()
    for entry in filter(None, hostlist.split(",")):
        match = _HOST.fullmatch(entry)
        if match is None:
            raise ValueError(f"bad host {entry!r} in {shown!r} (IPv6 addresses go in brackets)")
        hosts.append(match["v6"] or match["name"])
        if match["port"]:
            ports.add(int(match["port"]))
    if not hosts:
        raise ValueError(f"no Cassandra host in {shown!r}")
    if len(ports) > 1:
        raise ValueError(f"hosts on different ports in {shown!r}: the driver uses one port for every node")
    keyspace = unquote(path.strip("/")) or DEFAULT_KEYSPACE
    if not _KEYSPACE_NAME.match(keyspace):
        raise ValueError(f"bad keyspace name {keyspace!r}: letters, digits and _ only, at most 48")
    params = {key: values[-1] for key, values in parse_qs(query).items()}
    unknown = set(params) - {"dc", "rf"}
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} in {shown!r} (known: dc, rf)")
    return CassandraUrl(
        hosts=tuple(hosts),
        port=ports.pop() if ports else DEFAULT_PORT,
        keyspace=keyspace,
        local_dc=params.get("dc") or None,
        username=username,
        password=password,
        replication_factor=int(params.get("rf", 1)),
    )


def _connection_class() -> type | None:
    """libev when its C extension is built (faster, and the default reactor asyncore is gone
    from Python 3.12); otherwise None, which lets the driver choose."""
    try:
        from cassandra.io.libevreactor import LibevConnection
    except Exception:  # ImportError or the driver's DependencyException
        return None
    return LibevConnection


def _day(opened_us: int) -> date:
    return from_micros(opened_us).date()


class CassandraSessionStore(SessionStore):
    def __init__(self, url: str | CassandraUrl, *, request_timeout_s: float = 15.0,
                 tombstone_ttl_s: int = TOMBSTONE_TTL_S) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        self.url = url if isinstance(url, CassandraUrl) else parse_cassandra_url(url)
        routing = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self.url.local_dc or ""))
        profiles = {
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=routing,
                consistency_level=ConsistencyLevel.LOCAL_QUORUM,
                serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
                request_timeout=request_timeout_s,
            ),
            "serial_read": ExecutionProfile(
                load_balancing_policy=routing,
                consistency_level=ConsistencyLevel.LOCAL_SERIAL,
                request_timeout=request_timeout_s,
            ),
        }
        options: dict[str, Any] = {"contact_points": list(self.url.hosts), "port": self.url.port,
                                   "execution_profiles": profiles}
        if self.url.username:
            options["auth_provider"] = PlainTextAuthProvider(self.url.username, self.url.password or "")
        connection_class = _connection_class()
        if connection_class is not None:
            options["connection_class"] = connection_class
        self._cluster = Cluster(**options)
        self.session = self._cluster.connect()
        self._prepared: dict[str, Any] | None = None
        self._known_partitions: set[int] = set()
        self.tombstone_ttl_s = int(tombstone_ttl_s)

    @classmethod
    def from_url(cls, url: str) -> "CassandraSessionStore":
        return cls(url)

    def close(self) -> None:
        self._cluster.shutdown()

    # --- schema ---------------------------------------------------------------------------------
    def init_schema(self) -> int:
        """Create the keyspace (if missing) and apply the migrations not yet recorded.

        Run it from one process at a time (``embedding-studio store init``): concurrent DDL of
        the same table from two clients can leave the cluster with disagreeing schemas."""
        if self.url.local_dc:
            replication = f"{{'class': 'NetworkTopologyStrategy', '{self.url.local_dc}': {self.url.replication_factor}}}"
        else:
            replication = f"{{'class': 'SimpleStrategy', 'replication_factor': {self.url.replication_factor}}}"
        self.session.execute(f"CREATE KEYSPACE IF NOT EXISTS {self.url.keyspace} WITH replication = {replication}")
        from cassandra import InvalidRequest

        self.session.set_keyspace(self.url.keyspace)
        self.session.execute(MIGRATIONS_TABLE)
        done = self._applied_versions()
        for version in sorted(MIGRATIONS):
            if version in done:
                continue
            description, statements = MIGRATIONS[version]
            for statement in statements:
                try:
                    self.session.execute(statement)  # the driver waits for schema agreement after DDL
                except InvalidRequest as error:
                    if "already exist" not in str(error) and "conflicts with an existing column" not in str(error):
                        raise
            self.session.execute(
                self.session.prepare(STATEMENTS["record_migration"]),
                (_MIGRATION_SCOPE, version, datetime.now(timezone.utc), description),
            )
            log.info("Cassandra store %s migrated to schema version %d", self.url.redacted(), version)
        self._prepared = None
        return SCHEMA_VERSION

    def _applied_versions(self) -> set[int]:
        rows = self.session.execute(self.session.prepare(STATEMENTS["schema_versions"]), (_MIGRATION_SCOPE,))
        return {row.version for row in rows}

    @property
    def _ps(self) -> dict[str, Any]:
        # Prepared lazily: preparing needs the tables, which exist only after init_schema.
        if self._prepared is None:
            from cassandra import InvalidRequest

            try:
                self.session.set_keyspace(self.url.keyspace)
                current = max(self._applied_versions(), default=0)
            except InvalidRequest as error:
                raise StoreNotInitialised(
                    f"{self.url.redacted()} has no session store schema; run `embedding-studio store init`"
                ) from error
            if current < SCHEMA_VERSION:
                raise StoreNotInitialised(
                    f"{self.url.redacted()} is at schema version {current}, this code needs {SCHEMA_VERSION}; "
                    "run `embedding-studio store init`"
                )
            self._prepared = {name: self.session.prepare(cql) for name, cql in STATEMENTS.items()}
        return self._prepared

    def _execute(self, name: str, params: Sequence[Any], *, paging_state: bytes | None = None,
                 fetch_size: int | None = None):
        statement = self._ps[name].bind(params)
        if fetch_size is not None:
            statement.fetch_size = fetch_size
        profile = "serial_read" if name in _SERIAL_READS else None
        kwargs: dict[str, Any] = {"paging_state": paging_state}
        if profile:
            kwargs["execution_profile"] = profile
        return self.session.execute(statement, **kwargs)

    def _execute_many(self, name: str, params: Sequence[Sequence[Any]]) -> list[Any]:
        """Run one prepared statement for many parameter rows, ``_CONCURRENCY`` in flight.

        Not a CQL BATCH: the rows live in many partitions, and a multi-partition batch only
        moves the fan-out onto one coordinator."""
        from cassandra.concurrent import execute_concurrent_with_args

        if not params:
            return []
        results = execute_concurrent_with_args(
            self.session, self._ps[name], params, concurrency=_CONCURRENCY, raise_on_first_error=True
        )
        return [result for _, result in results]

    # --- sessions ---------------------------------------------------------------------------------
    def claim_batcher(self) -> int:
        while True:  # compare-and-set by LWT; a lost race reads the winner's epoch and tries again
            row = self._execute("batcher_epoch", (_SINGLETON,)).one()
            if row is None:
                if self._execute("first_batcher", (_SINGLETON, 1)).was_applied:
                    return 1
                continue
            if self._execute("next_batcher", (row.epoch + 1, _SINGLETON, row.epoch)).was_applied:
                return row.epoch + 1

    def _require_epoch(self, epoch: int | None) -> None:
        # A serial read before the writes, not one atomic step with them (no transaction spans
        # Cassandra partitions): a batcher superseded in between may still write one call's
        # sessions, which the session claim (LWT) keeps in at most one batch.
        if epoch is None:
            return
        row = self._execute("batcher_epoch", (_SINGLETON,)).one()
        if row is None or row.epoch != epoch:
            raise StaleBatcher(f"batcher epoch {epoch} is stale (newest: {row.epoch if row else None})")

    def put_sessions(self, batch_id: str, sessions: Iterable[ClosedSession], *, epoch: int | None = None) -> int:
        self._require_epoch(epoch)
        batch = self.get_batch(batch_id)
        if batch is None:
            raise BatchNotFound(batch_id)
        if batch.status is not BatchStatus.open:
            raise BatchNotOpen(f"batch {batch_id!r} is {batch.status.value}")
        unique: dict[str, ClosedSession] = {}
        for session in sessions:
            unique.setdefault(session.session_id, session)
        ids = list(unique)
        # The claim first, by LWT (IF NOT EXISTS): two batchers overlapping in a rebalance cannot
        # both put a session in a batch. It costs a Paxos round per session (64 in flight), the
        # price of "at most one batch" without a single writer to trust. A crash between the
        # claim and the row leaves a claim naming this batch: the retry finds it and writes the row.
        claims = self._execute_many("claim_session_batch", [(sid, batch_id) for sid in ids])
        mine: list[ClosedSession] = []
        new = 0
        for sid, claim in zip(ids, claims):
            if claim.was_applied:
                new += 1
                mine.append(unique[sid])
            elif claim.one().batch_id == batch_id:
                mine.append(unique[sid])  # claimed by an earlier try of this call: the row is rewritten as is
        self._execute_many(
            "insert_session",
            [
                (batch_id, stable_bucket(s.session_id, SESSION_BUCKETS), s.session_id, to_micros(s.created_at),
                 to_micros(s.closed_at), session_body(s))
                for s in mine
            ],
        )
        return new

    def get_session(self, session_id: str) -> StoredSession | None:
        lookup = self._execute("session_batch", (session_id,)).one()
        if lookup is None:
            return None
        row = self._execute(
            "session", (lookup.batch_id, stable_bucket(session_id, SESSION_BUCKETS), session_id)
        ).one()
        return None if row is None else stored_session(lookup.batch_id, row.body)

    def iter_sessions(self, batch_id: str, page_size: int = 500) -> Iterator[StoredSession]:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        # Order: bucket, then session_id (the clustering order) — stable across reads.
        for bucket in range(SESSION_BUCKETS):
            for row in self._pages("bucket_sessions", (batch_id, bucket), page_size):
                yield stored_session(batch_id, row.body)

    def _pages(self, name: str, params: Sequence[Any], page_size: int) -> Iterator[Any]:
        """Rows of one partition, one server page at a time: only the current page is held."""
        paging_state: bytes | None = None
        while True:
            result = self._execute(name, params, paging_state=paging_state, fetch_size=page_size)
            yield from result.current_rows
            paging_state = result.paging_state
            if not paging_state:
                return

    def count_sessions(self, batch_id: str) -> int:
        counts = self._execute_many("bucket_count", [(batch_id, bucket) for bucket in range(SESSION_BUCKETS)])
        return sum(result.one()[0] for result in counts)

    # --- batches ------------------------------------------------------------------------------------
    def open_batch(self, batch_id: str, opened_at: datetime) -> BatchRecord:
        opened_us = to_micros(opened_at)
        result = self._execute("open_batch", (batch_id, opened_us))
        if result.was_applied:
            record = BatchRecord(batch_id=batch_id, status=BatchStatus.open, opened_at=from_micros(opened_us))
        else:
            record = _batch_record(result.one())  # a failed IF NOT EXISTS returns the existing row
        self._index_batch(record)
        if record.status is BatchStatus.open:
            self._execute("set_current_batch", (_SINGLETON, batch_id))
        return record

    def _index_batch(self, record: BatchRecord) -> None:
        # Plain idempotent upserts, repeated on every open and close so that a crash between the
        # LWT and these writes is repaired by the retry.
        opened_us = to_micros(record.opened_at)
        day = _day(opened_us)
        self._execute("insert_batch_day", (_SINGLETON, day))
        self._execute("insert_batch_by_day", (day, opened_us, record.batch_id))

    def get_open_batch(self) -> BatchRecord | None:
        """The batch most recently opened, while it is open: the batcher collects into one batch
        at a time, so one pointer (overwritten, never deleted, hence no tombstones) suffices."""
        pointer = self._execute("current_batch", (_SINGLETON,)).one()
        if pointer is None:
            return None
        record = self.get_batch(pointer.batch_id)
        return record if record is not None and record.status is BatchStatus.open else None

    def close_batch(
        self, batch_id: str, closed_at: datetime, reason: BatchCloseReason, release_id: str | None = None,
        *, epoch: int | None = None,
    ) -> BatchRecord:
        self._require_epoch(epoch)
        current = self.get_batch(batch_id)
        if current is None:
            raise BatchNotFound(batch_id)
        if current.status is BatchStatus.closed:
            self._index_batch(current)
            return current
        if release_id is not None:
            claim = self._execute("claim_release", (release_id, batch_id))
            if not claim.was_applied and claim.one().batch_id != batch_id:
                raise ReleaseConflict(f"release {release_id!r} already closed batch {claim.one().batch_id!r}")
        count = self.count_sessions(batch_id)
        result = self._execute(
            "close_batch",
            (to_micros(closed_at), reason, UNSET_VALUE if release_id is None else release_id, count, batch_id),
        )
        if result.was_applied:
            record = BatchRecord(
                batch_id=batch_id, status=BatchStatus.closed, opened_at=current.opened_at,
                closed_at=from_micros(to_micros(closed_at)), session_count=count, close_reason=reason,
                release_id=release_id,
            )
        else:
            # Someone closed it first (a racing closer, or our own earlier attempt whose answer
            # was lost to a timeout): that close stands.
            record = self.get_batch(batch_id)  # type: ignore[assignment]
        self._index_batch(record)
        return record

    def mark_announced(self, batch_id: str, announced_at: datetime) -> bool:
        result = self._execute("mark_announced", (to_micros(announced_at), batch_id))
        if result.was_applied:
            return True
        row = result.one()  # the row as the failed condition found it (no row: unknown batch)
        if row is None or getattr(row, "status", None) is None:
            raise BatchNotFound(batch_id)
        if row.status != BatchStatus.closed.value:
            raise BatchNotClosed(f"batch {batch_id!r} is {row.status}")
        return False

    def list_unannounced(self, limit: int = 1000) -> list[BatchRecord]:
        closed = self.list_batches(BatchStatus.closed, limit=UNANNOUNCED_SCAN)
        marks = self._execute_many("batch_announced", [(b.batch_id,) for b in closed])
        missing = [b for b, result in zip(closed, marks) if (row := result.one()) is not None and row.announced_us is None]
        return sorted(missing, key=lambda b: (b.closed_at, b.batch_id))[:limit]

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = self._execute("batch", (batch_id,)).one()
        return None if row is None else _batch_record(row)

    def find_batch_by_release(self, release_id: str) -> BatchRecord | None:
        claim = self._execute("release_batch", (release_id,)).one()
        if claim is None:
            return None
        record = self.get_batch(claim.batch_id)
        # A claim whose close lost a race to another closer names a batch closed under a
        # different release; it does not count.
        return record if record is not None and record.release_id == release_id else None

    def list_batches(self, status: BatchStatus | None = None, limit: int = 100) -> list[BatchRecord]:
        wanted = None if status is None else BatchStatus(status)
        found: list[BatchRecord] = []
        if limit <= 0:
            return found
        for day_row in self._pages("batch_days", (_SINGLETON,), _SCAN_PAGE):
            page: list[str] = []
            for row in self._pages("batches_of_day", (day_row.day,), _SCAN_PAGE):
                page.append(row.batch_id)
                if len(page) == _SCAN_PAGE:
                    if self._collect_batches(page, wanted, limit, found):
                        return found
                    page = []
            if self._collect_batches(page, wanted, limit, found):
                return found
        return found

    def _collect_batches(self, ids: list[str], wanted: BatchStatus | None, limit: int,
                         found: list[BatchRecord]) -> bool:
        """Append the records of ``ids`` (in order) that match; True once ``limit`` is reached."""
        for result in self._execute_many("batch", [(batch_id,) for batch_id in ids]):
            row = result.one()
            if row is None:
                continue
            record = _batch_record(row)
            if wanted is None or record.status is wanted:
                found.append(record)
                if len(found) >= limit:
                    return True
        return False

    # --- open sessions ------------------------------------------------------------------------------
    def load_open_sessions(self, session_ids: Iterable[str]) -> dict[str, OpenSession]:
        ids = list(dict.fromkeys(session_ids))
        states: dict[str, OpenSession] = {}
        for session_id, result in zip(ids, self._execute_many("open_session", [(sid,) for sid in ids])):
            row = result.one()
            if row is not None:
                states[session_id] = open_session(row.body)
        return states

    def save_open_sessions(self, sessions: Iterable[OpenSession]) -> None:
        states = list(sessions)
        if not states:
            return
        new_partitions = {s.partition for s in states} - self._known_partitions
        self._execute_many("insert_open_partition", [(_SINGLETON, p) for p in sorted(new_partitions)])
        self._known_partitions |= new_partitions
        # An open state leaves closed_us unset rather than null: binding None would write a
        # tombstone on every save, and idle scans would wade through them. A state never reopens,
        # so there is never a closed_us to clear.
        rows = [
            (s, to_micros(s.last_seen_at), UNSET_VALUE if s.closed_at is None else to_micros(s.closed_at))
            for s in states
        ]
        # State first, index second: the idle scan re-checks every candidate against the state,
        # and a crash between the two is repaired by the replay of the unacknowledged events.
        # Tombstones are written with a TTL: they expire on their own (see TOMBSTONE_TTL_S).
        ttl = self.tombstone_ttl_s
        live = [row for row in rows if row[0].closed_at is None]
        ended = [row for row in rows if row[0].closed_at is not None]
        self._execute_many(
            "upsert_open_session",
            [(s.session_id, s.partition, seen, closed, open_session_body(s)) for s, seen, closed in live],
        )
        self._execute_many(
            "upsert_tombstone",
            [(s.session_id, s.partition, seen, closed, open_session_body(s), ttl) for s, seen, closed in ended],
        )
        self._execute_many(
            "upsert_open_index",
            [(s.partition, stable_bucket(s.session_id, OPEN_STATE_BUCKETS), s.session_id, seen, closed)
             for s, seen, closed in live],
        )
        self._execute_many(
            "upsert_tombstone_index",
            [(s.partition, stable_bucket(s.session_id, OPEN_STATE_BUCKETS), s.session_id, seen, closed, ttl)
             for s, seen, closed in ended],
        )

    def iter_idle_open_sessions(self, partitions: Iterable[int], last_seen_before: datetime) -> Iterator[OpenSession]:
        before = to_micros(last_seen_before)
        for partition in sorted(set(partitions)):
            for bucket in range(OPEN_STATE_BUCKETS):
                candidates = [
                    row.session_id
                    for row in self._pages("open_index_bucket", (partition, bucket), _SCAN_PAGE)
                    if row.closed_us is None and row.last_seen_us < before
                ]
                for start in range(0, len(candidates), _SCAN_PAGE):
                    states = self.load_open_sessions(candidates[start:start + _SCAN_PAGE])
                    for state in states.values():
                        if (state.partition == partition and state.closed_at is None
                                and to_micros(state.last_seen_at) < before):
                            yield state

    def purge_tombstones(self, closed_before: datetime) -> int:
        before = to_micros(closed_before)
        purged = 0
        partitions = [row.partition for row in self._pages("open_partitions", (_SINGLETON,), _SCAN_PAGE)]
        for partition in partitions:
            for bucket in range(OPEN_STATE_BUCKETS):
                expired = [
                    row.session_id
                    for row in self._pages("open_index_bucket", (partition, bucket), _SCAN_PAGE)
                    if row.closed_us is not None and row.closed_us < before
                ]
                self._execute_many("delete_open_session", [(sid,) for sid in expired])
                self._execute_many("delete_open_index", [(partition, bucket, sid) for sid in expired])
                purged += len(expired)
        return purged


def _batch_record(row: Any) -> BatchRecord:
    return BatchRecord(
        batch_id=row.batch_id,
        status=BatchStatus(row.status),
        opened_at=from_micros(row.opened_us),
        closed_at=None if row.closed_us is None else from_micros(row.closed_us),
        session_count=row.session_count or 0,
        close_reason=row.close_reason,
        release_id=row.release_id,
    )
