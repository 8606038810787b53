"""The stream worker's metrics, gathered at scrape time from the parts that hold them.

The sessionizer loops keep plain counters (one writer each, no locks on the hot path); a loop in a
child process writes its counters to ``ES_DATA_DIR/metrics/children/<worker pid>-<n>.json`` about
once a second (``CounterFile``), and the worker's endpoint adds them to its own. The open batch,
the open-session count and the consumer lag are asked for when Prometheus scrapes (the last two
at most every ``probe_interval_s``: they cost a store scan and a broker round trip).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from observability import metrics as m
from observability.exposition import announcements_dir
from schemas.base import utc_now

log = logging.getLogger(__name__)


def children_dir(data_dir: Path | str) -> Path:
    return announcements_dir(data_dir) / "children"


class CounterFile:
    """A child process's counters, rewritten every ``interval_s`` until ``stopping`` is set."""

    def __init__(self, data_dir: Path | str, number: int, counters: Callable[[], Mapping[str, int]],
                 interval_s: float = 1.0):
        self.path = children_dir(data_dir) / f"{os.getppid()}-{number}.json"
        self.counters = counters
        self.interval_s = interval_s

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(dict(self.counters())))
        partial.replace(self.path)

    def keep_writing(self, stopping: threading.Event) -> threading.Thread:
        def run() -> None:
            while not stopping.wait(self.interval_s):
                self.write()
            self.write()

        thread = threading.Thread(target=run, name="counter-file", daemon=True)
        thread.start()
        return thread


def read_children(data_dir: Path | str, parent_pid: int | None = None) -> list[dict[str, int]]:
    parent_pid = parent_pid or os.getpid()
    found = []
    for path in children_dir(data_dir).glob(f"{parent_pid}-*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being replaced: the next scrape reads it
    return found


def forget_children(data_dir: Path | str, parent_pid: int | None = None) -> None:
    for path in children_dir(data_dir).glob(f"{parent_pid or os.getpid()}-*.json"):
        path.unlink(missing_ok=True)


def stream_counter_families(counter_sets: Iterable[Mapping[str, int]]) -> list[CounterMetricFamily]:
    """The counter families of ``metrics.STREAM_COUNTERS``, summed over the counter sets."""
    sums: dict[tuple[m.CounterFamily, str | None], int] = {}
    for counters in counter_sets:
        for key, value in counters.items():
            found = _family_of(key)
            if found is not None:
                sums[found] = sums.get(found, 0) + value
    families: dict[str, CounterMetricFamily] = {}
    for spec, _ in m.STREAM_COUNTERS.values():
        if spec.name not in families:
            families[spec.name] = CounterMetricFamily(spec.name, spec.help,
                                                      labels=[spec.label] if spec.label else [])
    for (spec, label), value in sorted(sums.items(), key=lambda item: (item[0][0].name, item[0][1] or "")):
        families[spec.name].add_metric([label] if spec.label else [], value)
    return list(families.values())


def _family_of(key: str) -> tuple[m.CounterFamily, str | None] | None:
    if key in m.STREAM_COUNTERS:
        return m.STREAM_COUNTERS[key]
    for pattern, (spec, _) in m.STREAM_COUNTERS.items():
        if pattern.endswith("*") and key.startswith(pattern[:-1]):
            return spec, key[len(pattern) - 1:]
    return None


class Throttled:
    """``fun()``'s last value, recomputed at most every ``interval_s``; a failure keeps the old one."""

    def __init__(self, fun: Callable[[], object], interval_s: float):
        self.fun = fun
        self.interval_s = interval_s
        self._at = -float("inf")
        self._value: object = None
        self._lock = threading.Lock()

    def __call__(self) -> object:
        with self._lock:
            if time.monotonic() - self._at >= self.interval_s:
                try:
                    self._value = self.fun()
                except Exception as error:  # noqa: BLE001 - a scrape must not fail for a probe
                    log.warning("metrics probe %s failed: %r", getattr(self.fun, "__name__", self.fun), error)
                self._at = time.monotonic()
            return self._value


class StreamCollector(Collector):
    """``counters()`` gives this process's counter sets; ``open_batch()`` (session count, opened at),
    ``open_sessions()`` and ``lag()`` ({partition: records}) may each be None where unknown."""

    def __init__(self, data_dir: Path | str, counters: Callable[[], list[Mapping[str, int]]],
                 open_batch: Callable[[], tuple[int, datetime | None]],
                 open_sessions: Callable[[], int | None], lag: Callable[[], dict[int, int] | None]):
        self.data_dir = data_dir
        self.counters = counters
        self.open_batch = open_batch
        self.open_sessions = open_sessions
        self.lag = lag

    def collect(self):
        yield from stream_counter_families([*self.counters(), *read_children(self.data_dir)])
        sessions, opened_at = self.open_batch()
        yield GaugeMetricFamily(*m.STREAM_BATCH_SESSIONS, value=sessions)
        age = (utc_now() - opened_at).total_seconds() if opened_at is not None else 0.0
        yield GaugeMetricFamily(*m.STREAM_BATCH_AGE, value=max(age, 0.0))
        open_sessions = self.open_sessions()
        if open_sessions is not None:
            yield GaugeMetricFamily(*m.STREAM_OPEN_SESSIONS, value=open_sessions)
        lag = self.lag()
        family = GaugeMetricFamily(*m.STREAM_CONSUMER_LAG, labels=["partition"])
        for partition, records in sorted((lag or {}).items()):
            family.add_metric([str(partition)], records)
        yield family
