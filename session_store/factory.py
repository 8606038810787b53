"""Which store a URL names: the composition root calls ``open_store(settings.resolved_store_url())``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from session_store.base import SessionStore
from session_store.urls import redact_url

if TYPE_CHECKING:
    from schemas.settings import Settings

SCHEMES = ("sqlite", "cassandra")

__all__ = ["SCHEMES", "open_store", "redact_url"]


def open_store(url: str, settings: "Settings | None" = None) -> SessionStore:
    """Open the store at ``url``: ``sqlite:///path.db`` or ``cassandra://host1,host2:9042/keyspace?dc=dc1``.

    A SQLite store creates or migrates its file on open; a Cassandra store expects its schema to
    exist already (``init_schema()``, i.e. ``embedding-studio store init``) because schema changes
    on a shared cluster should be a deliberate step, not a side effect of a worker starting.
    ``settings`` (default: read from the environment) give a Cassandra store its TTLs and the
    width of its open-session time buckets."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from session_store.sqlite_store import SqliteSessionStore

        return SqliteSessionStore.from_url(url)
    if scheme == "cassandra":
        # Imported here so that the SQLite path never pays for loading the Cassandra driver.
        from schemas.settings import Settings
        from session_store.cassandra_store import CassandraSessionStore

        return CassandraSessionStore.from_settings(url, settings or Settings())
    raise ValueError(
        f"unknown session store URL {redact_url(url)!r}: the scheme must be one of {', '.join(SCHEMES)} "
        "(e.g. sqlite:///data/sessions.db or cassandra://host1,host2:9042/keyspace?dc=dc1)"
    )
