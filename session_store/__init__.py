"""Closed sessions grouped into batches, plus the sessionizer's open-session state.

``open_store(url)`` picks the implementation: SQLite (embedded default) or Cassandra.
"""

from session_store.base import (
    BatchNotClosed,
    BatchNotFound,
    BatchNotOpen,
    ReleaseConflict,
    SessionStore,
    StaleBatcher,
    StoreNotInitialised,
)
from session_store.factory import SCHEMES, open_store
from session_store.urls import redact_url

__all__ = [
    "BatchNotClosed",
    "BatchNotFound",
    "BatchNotOpen",
    "ReleaseConflict",
    "SCHEMES",
    "SessionStore",
    "StaleBatcher",
    "StoreNotInitialised",
    "open_store",
    "redact_url",
]
