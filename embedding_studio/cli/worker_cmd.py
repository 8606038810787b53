from __future__ import annotations

import argparse

HELP = "Run a stream worker: sessionize the clickstream, batch closed sessions, announce closed batches."
DESCRIPTION = (
    "Runs the stream processors (a Faust app) in the foreground until Ctrl-C or SIGTERM. It reads raw "
    "events from the clickstream topic, refuses unusable ones to the dead-letter topic with the reason, "
    "groups the rest into sessions (closed by a session_end event, ES_SESSION_GAP_S of inactivity, or "
    "ES_SESSION_MAX_EVENTS / ES_SESSION_MAX_DURATION_S), stores closed sessions in the open batch of the "
    "session store (ES_STORE_URL), closes the batch at ES_BATCH_MAX_SESSIONS sessions, after "
    "ES_BATCH_MAX_AGE_S or on a release_batch command, and announces each closed batch on the batches "
    "topic. ES_KAFKA_BOOTSTRAP is required (the embedded runtime starts workers itself). Start as many "
    "workers as there are clickstream partitions to share the load; stop one with SIGTERM, and a crashed "
    "or killed one loses nothing: its partitions are replayed from the last committed offset."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-topics", action="store_true",
        help="Do not create missing topics at start (they are managed elsewhere); by default they are created.",
    )
    parser.add_argument("--log-level", help="Overrides ES_LOG_LEVEL for the worker.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from messaging import KafkaCluster
    from messaging.topics import ensure_topics
    from schemas.settings import Settings
    from session_store import open_store, redact_url
    from stream_processors.app import create_app
    from stream_processors.monitoring import observe_worker

    settings = Settings()
    if not settings.kafka_bootstrap:
        raise SystemExit(
            "worker: ES_KAFKA_BOOTSTRAP is not set. Point it at the Kafka cluster (e.g. the address "
            "`embedding-studio broker` prints), or let the embedded runtime start the worker."
        )
    if not args.no_topics:
        ensure_topics(KafkaCluster.from_settings(settings), settings.topics(), settings.replication_factor)
    url = settings.resolved_store_url()
    store = open_store(url)
    try:
        processors = create_app(settings, store)
        observe_worker(settings, processors)  # /metrics and the search-quality monitor
        print(f"stream worker: kafka {settings.kafka_bootstrap}, store {redact_url(url)}, "
              f"topics {settings.topic_prefix}.*", flush=True)
        processors.run(loglevel=(args.log_level or settings.log_level).upper())
    finally:
        store.close()
    return 0
