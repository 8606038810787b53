from __future__ import annotations

import argparse

HELP = "Prepare a cluster once: create the topics and the session store's schema (idempotent)."
DESCRIPTION = (
    "Creates every topic of the registry with its partition count (ES_TOPIC_PREFIX, ES_REPLICATION_FACTOR) "
    "on ES_KAFKA_BOOTSTRAP and creates or migrates the session store's schema (ES_STORE_URL; for Cassandra "
    "the keyspace and tables). Safe to run again: what exists is left as it is, and a topic whose partition "
    "count differs from the registry is reported as an error. docker-compose runs it as a one-shot service "
    "before the workers and the trainer start."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from messaging import KafkaCluster
    from messaging.topics import TopicMismatchError, ensure_topics
    from schemas.settings import Settings
    from session_store import open_store, redact_url

    settings = Settings()
    if not settings.kafka_bootstrap:
        raise SystemExit("init: ES_KAFKA_BOOTSTRAP is not set (the embedded runtime creates its own topics)")
    try:
        ensure_topics(KafkaCluster.from_settings(settings), settings.topics(), settings.replication_factor)
    except TopicMismatchError as error:
        raise SystemExit(f"init: {error}") from None
    print(f"topics ready on {settings.kafka_bootstrap} (prefix {settings.topic_prefix})")
    url = settings.resolved_store_url()
    with open_store(url) as store:
        version = store.init_schema()
    print(f"session store ready: {redact_url(url)} (schema version {version})")
    return 0
