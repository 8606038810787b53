"""The Cassandra store's connection: the driver's cluster and session, the schema and its
migrations, and prepared statements run by name (``session_store/cassandra_schema.py``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from session_store.base import StoreNotInitialised
from session_store.cassandra_schema import (
    BACKFILLS,
    MIGRATION_SCOPE,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    SCHEMA_VERSION,
    SERIAL_READS,
    STATEMENTS,
)
from session_store.urls import CassandraUrl, parse_cassandra_url

log = logging.getLogger(__name__)

_CONCURRENCY = 64


def _connection_class() -> type | None:
    """libev when its C extension is built (faster, and the default reactor asyncore is gone
    from Python 3.12); otherwise None, which lets the driver choose."""
    try:
        from cassandra.io.libevreactor import LibevConnection
    except Exception:  # ImportError or the driver's DependencyException
        return None
    return LibevConnection


class CassandraDatabase:
    def __init__(self, url: str | CassandraUrl, *, request_timeout_s: float = 15.0) -> None:
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
        self._migrating = False

    def close(self) -> None:
        self._cluster.shutdown()

    # --- schema ---------------------------------------------------------------------------------
    def init_schema(self, backfills: dict[str, Callable[[], None]]) -> int:
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
                if statement in BACKFILLS:
                    backfills[str(statement)]()
                    continue
                try:
                    self.session.execute(statement)  # the driver waits for schema agreement after DDL
                except InvalidRequest as error:
                    if "already exist" not in str(error) and "conflicts with an existing column" not in str(error):
                        raise
            self.session.execute(
                self.session.prepare(STATEMENTS["record_migration"]),
                (MIGRATION_SCOPE, version, datetime.now(timezone.utc), description),
            )
            log.info("Cassandra store %s migrated to schema version %d", self.url.redacted(), version)
        self._prepared = None
        return SCHEMA_VERSION

    def _applied_versions(self) -> set[int]:
        rows = self.session.execute(self.session.prepare(STATEMENTS["schema_versions"]), (MIGRATION_SCOPE,))
        return {row.version for row in rows}

    @contextmanager
    def migrating(self) -> Iterator[None]:
        """Statements may run on a schema not yet at SCHEMA_VERSION (inside a migration only)."""
        self._migrating, self._prepared = True, None
        try:
            yield
        finally:
            self._migrating, self._prepared = False, None

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
            if current < SCHEMA_VERSION and not self._migrating:
                raise StoreNotInitialised(
                    f"{self.url.redacted()} is at schema version {current}, this code needs {SCHEMA_VERSION}; "
                    "run `embedding-studio store init`"
                )
            self._prepared = {name: self.session.prepare(cql) for name, cql in STATEMENTS.items()}
        return self._prepared

    def execute(self, name: str, params: Sequence[Any], *, paging_state: bytes | None = None,
                 fetch_size: int | None = None):
        statement = self._ps[name].bind(params)
        if fetch_size is not None:
            statement.fetch_size = fetch_size
        profile = "serial_read" if name in SERIAL_READS else None
        kwargs: dict[str, Any] = {"paging_state": paging_state}
        if profile:
            kwargs["execution_profile"] = profile
        return self.session.execute(statement, **kwargs)

    def execute_many(self, name: str, params: Sequence[Sequence[Any]]) -> list[Any]:
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


    def pages(self, name: str, params: Sequence[Any], page_size: int) -> Iterator[Any]:
        """Rows of one partition, one server page at a time: only the current page is held."""
        paging_state: bytes | None = None
        while True:
            result = self.execute(name, params, paging_state=paging_state, fetch_size=page_size)
            yield from result.current_rows
            paging_state = result.paging_state
            if not paging_state:
                return
