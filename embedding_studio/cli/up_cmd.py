from __future__ import annotations

import argparse

HELP = "Run the whole system on this machine (broker, MLflow, stream workers, trainer, indexer, search) until Ctrl-C."
DESCRIPTION = (
    "Starts every part a setting leaves unset: a tansu broker (no ES_KAFKA_BOOTSTRAP), an MLflow server with "
    "a SQLite backend (no ES_MLFLOW_TRACKING_URI), the SQLite session store under ES_DATA_DIR (no ES_STORE_URL); "
    "the Milvus Lite index under ES_DATA_DIR/index served on a free port (no ES_MILVUS_URI); then --workers stream "
    "worker processes, the trainer, the indexer and the search endpoint (ES_SEARCH_PORT, 0: a free one). Prints the addresses producers and operators "
    "need, and runs until Ctrl-C or SIGTERM, stopping parts in reverse order. Logs go to ES_DATA_DIR/logs. "
    "The embedded broker keeps its topics in memory: they are gone when it stops (sessions, batches, tasks "
    "and models stay on disk)."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="Stream worker processes (default 1).")
    parser.add_argument("--no-trainer", action="store_true", help="Do not run the trainer here.")
    parser.add_argument("--no-indexer", action="store_true", help="Do not run the indexer here.")
    parser.add_argument("--no-search", action="store_true", help="Do not run the search endpoint here.")
    parser.add_argument("--progress", action="store_true", help="Show a progress bar per training run.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from embedding_studio.cli.status_cmd import print_metrics_endpoints
    from embedding_studio.embedded.system import EmbeddedSystem
    from schemas.settings import Settings
    from session_store import redact_url

    from trainer.plugin_loader import PluginPathError, check_plugin_folders

    try:
        check_plugin_folders(Settings().plugins_path)
    except PluginPathError as error:
        raise SystemExit(f"up: {error}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedSystem(Settings(), workers=args.workers, trainer=not args.no_trainer,
                        training_overrides={"progress_bar": args.progress}, indexer=not args.no_indexer,
                        search=not args.no_search) as system:
        settings = system.settings
        print(f"kafka    {system.bootstrap}   (export ES_KAFKA_BOOTSTRAP={system.bootstrap})")
        print(f"mlflow   {settings.mlflow_tracking_uri}   (the UI, and ES_MLFLOW_TRACKING_URI)")
        print(f"store    {redact_url(settings.resolved_store_url())}")
        print(f"index    {settings.milvus_uri}   (export ES_MILVUS_URI={settings.milvus_uri}; "
              f"`embedding-studio index status`)")
        print(f"search   {system.search_url or 'off'}" + ("   (GET /search?q=&k=, POST /click; docs at /docs)"
                                                         if system.search_url else ""))
        print(f"workers  {args.workers}, trainer {'off' if args.no_trainer else 'on'}, indexer "
              f"{'off' if args.no_indexer else 'on'}, logs in {system.logs_dir}")
        print_metrics_endpoints(system, args.workers + (not args.no_trainer) + (not args.no_indexer)
                                + (not args.no_search))
        print("send clicks with `embedding-studio emit FILE`, tasks with `embedding-studio tasks`; Ctrl-C stops.",
              flush=True)
        try:
            while not stop.wait(2.0):
                problems = system.problems()
                if problems:
                    print("stopping: " + "; ".join(problems), flush=True)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0
