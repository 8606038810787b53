"""Indexer metrics: refreshes by outcome, their duration, and what is served."""

from __future__ import annotations

from observability import metrics as m


def observe_refresh(seconds: float, version: int, item_count: int) -> None:
    m.INDEX_REFRESHES.labels("served").inc()
    m.INDEX_REFRESH_DURATION.observe(seconds)
    observe_served(version, item_count)


def observe_refresh_failed() -> None:
    m.INDEX_REFRESHES.labels("failed").inc()


def observe_served(version: int, item_count: int) -> None:
    m.INDEX_SERVED_VERSION.set(version)
    m.INDEX_SERVED_ITEMS.set(item_count)
