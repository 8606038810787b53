"""What the stream worker shows an operator: its metrics endpoint, and the live search-quality monitor.

``observe_worker(settings, processors)`` (called by ``embedding-studio worker``) serves the worker's
metrics (``observability.stream.StreamCollector`` over its counters, the open batch, the open
sessions in the store and the sessionizers' consumer lag) and starts a ``QualityMonitor``.

The monitor is a consumer of its own on the closed-sessions topic (group ``<prefix>.search-quality``):
every closed session the sessionizers send the batcher is judged per serving model
(``observability.search_quality``) into the ``es_search_*`` metrics and a chart over time,
``ES_DATA_DIR/search-quality.png``, rewritten every ``ES_QUALITY_CHART_INTERVAL_S`` while sessions
come in. The topic has one partition, so of several workers one monitors at a time; after a restart
the monitor goes on from its group's committed offset (the chart starts anew, Prometheus keeps the
history).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition
from prometheus_client import REGISTRY

from messaging import KafkaCluster
from observability.exposition import MetricsServer, start_metrics_server
from observability.search_quality import QualityTracker, render_chart
from observability.stream import StreamCollector, Throttled, forget_children
from schemas.base import utc_now
from schemas.settings import Settings

log = logging.getLogger(__name__)


def observe_worker(settings: Settings, processors) -> MetricsServer | None:
    """Serve the worker's metrics and start its quality monitor (``processors``: a StreamProcessors)."""
    if not settings.metrics_enabled:
        return None
    forget_children(settings.data_dir)
    batcher = processors.batcher
    probes = WorkerProbes(settings, processors.sessionizers.group_id)
    REGISTRY.register(StreamCollector(
        settings.data_dir,
        counters=lambda: [processors.metrics.sessionizer, processors.metrics.batcher],
        open_batch=lambda: (batcher.count, batcher.open.opened_at) if batcher.open is not None else (0, None),
        open_sessions=Throttled(probes.open_sessions, settings.metrics_probe_interval_s),
        lag=Throttled(probes.lag, settings.metrics_probe_interval_s),
    ))
    endpoint = start_metrics_server(settings, "worker")
    if settings.quality_monitor:
        monitor = QualityMonitor(settings).start()
        atexit.register(monitor.stop)  # leave the group at once: the next worker takes the partition over
    return endpoint


class WorkerProbes:
    """Questions to the store and the broker, on the scrape thread with clients of their own."""

    def __init__(self, settings: Settings, sessionizer_group: str):
        self.settings = settings
        self.group = sessionizer_group
        self._store = None
        self._consumer: Consumer | None = None

    def open_sessions(self) -> int:
        from session_store import open_store

        if self._store is None:
            self._store = open_store(self.settings.resolved_store_url())
        partitions = range(self.settings.clickstream_partitions)
        far = utc_now() + timedelta(days=36500)  # every open session, however recent
        return sum(1 for _ in self._store.iter_idle_open_sessions(partitions, far))

    def lag(self) -> dict[int, int]:
        """High watermark minus the sessionizers' committed offset, per clickstream partition (a
        partition nothing was committed on yet counts from its low watermark)."""
        topic = self.settings.topics().clickstream
        if self._consumer is None:
            # Never subscribes: it reads the group's committed offsets without joining it.
            self._consumer = Consumer(KafkaCluster.from_settings(self.settings).consumer(self.group))
        committed = self._consumer.committed([TopicPartition(topic.name, p) for p in range(topic.partitions)],
                                             timeout=5)
        lag = {}
        for tp in committed:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(topic.name, tp.partition), timeout=5)
            position = tp.offset if tp.offset >= 0 else low
            lag[tp.partition] = max(high - position, 0)
        return lag


class QualityMonitor:
    def __init__(self, settings: Settings, tracker: QualityTracker | None = None):
        self.settings = settings
        self.tracker = tracker or QualityTracker(window_s=settings.quality_window_s)
        self.chart_path = Path(settings.data_dir) / "search-quality.png"
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "QualityMonitor":
        self._thread = threading.Thread(target=self._run_logged, name="search-quality", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run_logged(self) -> None:
        try:
            self.run()
        except Exception:  # noqa: BLE001 - monitoring must never stop the worker
            log.exception("the search-quality monitor stopped")

    def run(self) -> None:
        from stream_processors.batcher_records import SessionsClosed, parse_batcher_input

        topics = self.settings.topics()
        # Auto-commit: a figure counted twice after a restart is a monitoring blip, not lost data.
        consumer = Consumer(KafkaCluster.from_settings(self.settings).consumer(
            f"{topics.prefix}.search-quality", session_timeout_s=self.settings.stream_session_timeout_s,
            heartbeat_interval_s=self.settings.stream_heartbeat_interval_s,
            extra={"enable.auto.commit": True, "fetch.max.bytes": 64 << 20}))
        consumer.subscribe([topics.sessions.name])
        log.info("search-quality monitor reading %s; chart at %s", topics.sessions.name, self.chart_path)
        changed, next_chart = False, time.monotonic() + self.settings.quality_chart_interval_s
        try:
            while not self.stopping.is_set():
                for message in consumer.consume(100, timeout=0.5):
                    if message.error() is not None:
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("search-quality monitor: %s", message.error())
                        continue
                    try:
                        record = parse_batcher_input(message.value() or b"")
                    except ValueError:
                        continue  # the batcher reports what it cannot read
                    if isinstance(record, SessionsClosed):
                        for encoded in record.sessions:
                            changed |= self.tracker.add(encoded.decode())
                if changed and time.monotonic() >= next_chart:
                    self.write_chart()
                    changed, next_chart = False, time.monotonic() + self.settings.quality_chart_interval_s
        finally:
            consumer.close()
            if changed:
                self.write_chart()

    def write_chart(self) -> None:
        try:
            render_chart(self.tracker, self.chart_path)
        except Exception:  # noqa: BLE001 - a chart that fails is logged, the counting goes on
            log.exception("search-quality chart not written")
