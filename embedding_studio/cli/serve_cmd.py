from __future__ import annotations

import argparse

HELP = "Run the search endpoint: GET /search?q=&k= from the served index, POST /click back into the clickstream."
DESCRIPTION = (
    "An HTTP endpoint (FastAPI on uvicorn) on ES_SEARCH_HOST:ES_SEARCH_PORT. GET /search?q=&k= answers from "
    "the served index version and names the model and version that answered; with ES_KAFKA_BOOTSTRAP set, each "
    "search is logged into the clickstream as a SearchSession (search_meta: index version, model) and "
    "POST /click, /irrelevant and /end log what the user did, through the producer SDK. OpenAPI schema at "
    "/openapi.json, docs at /docs."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="Override ES_SEARCH_PORT.")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from index.api import create_app
    from index.factory import IndexLocked, index_uri, open_index
    from observability.exposition import start_metrics_server
    from schemas.settings import Settings

    settings = Settings()
    try:
        index = open_index(settings)
    except IndexLocked as error:
        raise SystemExit(f"serve: {error}") from None
    producer = None
    if settings.kafka_bootstrap:
        from ingest.producer import ClickstreamProducer
        from messaging import KafkaCluster

        cluster = KafkaCluster.from_settings(settings)
        producer = ClickstreamProducer(cluster, settings.topics())
    port = settings.search_port if args.port is None else args.port
    print(f"search endpoint on http://{settings.search_host}:{port} (index {index_uri(settings)}; clicks "
          f"{'to ' + settings.topics().clickstream.name if producer else 'not logged'})", flush=True)
    start_metrics_server(settings, "search")
    with index:
        app = create_app(index, settings.mlflow_tracking_uri, producer, settings.embed_precision)
        uvicorn.run(app, host=settings.search_host, port=port,
                    log_level=settings.log_level.lower(), log_config=None)  # None: our handler, ES_LOG_FORMAT
    return 0
