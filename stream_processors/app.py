"""The stream worker: a Faust app built from settings, in the order the data flows.

    clickstream ──▶ sessionizer ──▶ sessions ──▶ batcher ──▶ store, then batches (BatchClosed)
    commands ──(release_batch)──────────▲   ▲
    age timer ──(age_check)─────────────────┘

- ``sessionizer``: raw events in batches, sessions closed by end, gap, idle time or length
  (``sessionizer_service.SessionizerService`` runs ``sessionizer_loop.SessionizerLoop`` in
  ``sessionizer_processes`` processes of its own, because a Faust stream hands over one record at a
  time: see that module);
- ``batcher``: the one agent that changes the open batch; announces every batch it closes
  (``batcher_agent``);
- ``commands``: forwards ``release_batch`` commands to the batcher, dead-letters unreadable ones
  (``commands_agent``);
- ``age_check``: a timer asking the batcher, through its own topic, whether the batch is too old.

This module only wires them. Nothing connects at import time: ``create_app`` builds the app;
``StreamProcessors.run`` starts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust

from messaging import KafkaCluster, faust_broker_options
from schemas.settings import Settings
from session_store.base import SessionStore
from stream_processors.batcher import Batcher
from stream_processors.batcher_agent import BatcherAgent
from stream_processors.commands_agent import CommandsAgent
from stream_processors.counters import StreamCounters
from stream_processors.sessionizer_service import SessionizerService


@dataclass
class StreamProcessors:
    """The Faust app and the parts it runs, for the CLI, the embedded runtime, tests and benches."""

    app: faust.App
    sessionizers: "SessionizerService"
    batcher: Batcher
    metrics: StreamCounters

    def run(self, loglevel: str = "INFO") -> None:
        """Run the worker in this (main) thread until a signal stops it; raises if it crashed."""
        from faust.worker import Worker

        from observability.logs import faust_logging_config

        worker = Worker(self.app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                        logging_config=faust_logging_config())  # ES_LOG_FORMAT
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise


def create_app(
    settings: Settings,
    store: SessionStore,
    *,
    bootstrap: str | None = None,
    app_id: str | None = None,
    metrics_interval_s: float = 30.0,
    **faust_options: Any,
) -> StreamProcessors:
    """Build the stream worker. ``bootstrap`` defaults to ``settings.kafka_bootstrap`` (the embedded
    runtime passes the broker it started); ``faust_options`` override the app's settings.

    ``store`` serves the batcher. Sessionizer processes open ``settings.resolved_store_url()``
    themselves (a store object cannot cross a process boundary), so the two must name the same
    store; with ``settings.sessionizer_processes == 0`` everything uses ``store``."""
    if not (bootstrap or settings.kafka_bootstrap):
        raise ValueError("the stream worker needs a Kafka bootstrap (ES_KAFKA_BOOTSTRAP)")
    cluster = KafkaCluster.from_settings(settings, bootstrap)
    topics = settings.topics()
    app_id = app_id or f"{topics.prefix}.stream-processors"
    metrics = StreamCounters()
    app = faust.App(app_id, **{**app_options(settings, cluster), **faust_options})

    def raw_topic(name: str, partitions: int) -> faust.TopicT:
        # Raw bytes both ways: keys must hash exactly as the producers' partitioner hashed them.
        return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)

    sessions_topic = raw_topic(topics.sessions.name, topics.sessions.partitions)
    sessionizers = SessionizerService(settings, store, cluster, f"{app_id}.sessionizer", metrics, app)
    app.add_dependency(sessionizers)

    batcher = Batcher(
        store, max_sessions=settings.batch_max_sessions, max_age=timedelta(seconds=settings.batch_max_age_s),
        counters=metrics.batcher,
    )
    batcher_agent = BatcherAgent(app, batcher, store, sessions_topic=sessions_topic, metrics=metrics,
                                 batches_topic=raw_topic(topics.batches.name, topics.batches.partitions),
                                 cluster=cluster)
    commands_agent = CommandsAgent(sessions_topic=sessions_topic, metrics=metrics,
                                   commands_dlq=raw_topic(topics.commands_dlq.name, topics.commands_dlq.partitions))

    app.agent(sessions_topic, concurrency=1, name=f"{app_id}.batcher")(batcher_agent.process)
    app.agent(raw_topic(topics.commands.name, topics.commands.partitions), concurrency=1,
              name=f"{app_id}.commands")(commands_agent.process)
    app.on_partitions_revoked.connect(batcher_agent.on_partitions_revoked)
    app.on_partitions_assigned.connect(batcher_agent.on_partitions_assigned)
    # Sent from every worker; the batcher alone decides. Also wakes a new owner of the sessions
    # partition, so that it announces what a crashed one left unannounced even with no traffic.
    app.timer(min(max(settings.batch_max_age_s / 4, 0.1), 10.0), name=f"{app_id}.age_check")(batcher_agent.wake)
    app.timer(metrics_interval_s, name=f"{app_id}.log_metrics")(_async(metrics.log))

    return StreamProcessors(app=app, sessionizers=sessionizers, batcher=batcher, metrics=metrics)


def app_options(settings: Settings, cluster: KafkaCluster) -> dict[str, Any]:
    """The Faust settings of the stream worker."""
    faust_dir = Path(settings.data_dir) / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return dict(
        **faust_broker_options(cluster),
        store="memory://",  # no tables: the working state lives in the session store
        processing_guarantee="at_least_once",
        autodiscover=False,
        web_enabled=False,  # several workers on one machine must not fight over a port
        topic_allow_declare=False,  # topics are created up front with their partition counts
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.stream_session_timeout_s,
        broker_heartbeat_interval=settings.stream_heartbeat_interval_s,
        consumer_max_fetch_size=16 << 20,  # a sessions record may carry a big search
        producer_max_request_size=16 << 20,
        datadir=str(faust_dir / "{conf.name}"),
    )


def _async(fun):
    async def call() -> None:
        fun()

    return call
