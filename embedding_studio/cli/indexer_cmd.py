from __future__ import annotations

import argparse

HELP = "Run the indexer: re-embed the catalog for every announced model, serve it when complete."
DESCRIPTION = (
    "Runs in the foreground until Ctrl-C or SIGTERM. Consumes es.models.ready: for each announced model it "
    "embeds the catalog (every item ES_ITEMS_URL lists, plus the items the served version holds) into a new "
    "index version, switches the served alias to it in one step only once it is complete, keeps the previous "
    "version for `embedding-studio index rollback` and publishes IndexReady on es.index.ready. A refresh that "
    "fails leaves the served version untouched and publishes nothing. Consumes es.items.upserts too: items "
    "added, changed or deleted between refreshes go into the served version. When nothing is served yet and "
    "the catalog lists its items, the first version is built with the starting model (ES_BASE_MODEL). The "
    "index is Milvus: ES_MILVUS_URI, or Milvus Lite under ES_DATA_DIR."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-initial-build", action="store_true",
                        help="Do not build a first version with the starting model when nothing is served.")
    parser.add_argument("--no-topics", action="store_true",
                        help="Do not create missing topics at start (they are managed elsewhere).")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from messaging import KafkaCluster
    from messaging.topics import ensure_topics
    from index.factory import IndexLocked, index_uri, open_index
    from index.indexer import Indexer, served_description
    from observability.exposition import start_metrics_server
    from schemas.settings import Settings

    settings = Settings()
    if not settings.kafka_bootstrap:
        raise SystemExit("indexer: set ES_KAFKA_BOOTSTRAP (or run `embedding-studio up`)")
    if not args.no_topics:
        ensure_topics(KafkaCluster.from_settings(settings), settings.topics(), settings.replication_factor)
    try:
        index = open_index(settings)
    except IndexLocked as error:
        raise SystemExit(f"indexer: {error}") from None
    with index:
        print(f"indexer: kafka {settings.kafka_bootstrap}, index {settings.index_name!r} on {index_uri(settings)}, "
              f"{served_description(index.served())}", flush=True)
        start_metrics_server(settings, "indexer")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            Indexer(settings, index).run(stop, initial_build=not args.no_initial_build)
        except KeyboardInterrupt:
            stop.set()
    return 0
