from __future__ import annotations

import argparse

HELP = "Run the trainer: fine-tune a model for every closed batch and task command, publish statuses."
DESCRIPTION = (
    "Runs the trainer in the foreground until Ctrl-C or SIGTERM. It consumes task commands (create, cancel, "
    "restart, replay_batch) and batch-closed events (each creates a task with ES_DEFAULT_FINE_TUNING_METHOD "
    "unless ES_AUTO_TRAIN=false), keeps task state in ES_DATA_DIR/trainer/tasks.sqlite, runs one fine-tuning "
    "at a time (Optuna search over the plugin's parameters, ES_TRAIN_TRIALS runs tracked in MLflow) and "
    "publishes a task-status event on every change and a model-ready event when a better model is kept. "
    "Needs ES_KAFKA_BOOTSTRAP, ES_MLFLOW_TRACKING_URI and the session store (ES_STORE_URL). Plugins are "
    "read from ES_PLUGINS_PATH. Uses CUDA when there is one. A trainer killed mid-task runs that task again "
    "after restart, reusing the trials it had finished."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action="store_true", help="Show a progress bar per training run.")
    parser.add_argument("--no-topics", action="store_true",
                        help="Do not create missing topics at start (they are managed elsewhere).")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from messaging import KafkaCluster
    from messaging.topics import ensure_topics
    from observability.exposition import start_metrics_server
    from schemas.settings import Settings
    from session_store import redact_url
    from trainer.app import TrainerConfigError, build_trainer
    from trainer.plugin_loader import PluginPathError, check_plugin_folders, discover_plugins

    settings = Settings()
    try:
        check_plugin_folders(settings.plugins_path)
    except PluginPathError as error:
        raise SystemExit(f"trainer: {error}") from None
    try:
        trainer = build_trainer(settings, training_overrides={"progress_bar": args.progress})
    except TrainerConfigError as error:
        raise SystemExit(f"trainer: {error}") from None
    if not args.no_topics:
        ensure_topics(KafkaCluster.from_settings(settings), settings.topics(), settings.replication_factor)
    registry = discover_plugins(settings.plugins_path)
    for name, reason in sorted(registry.errors.items()):
        print(f"plugin {name} not loaded: {reason}", flush=True)
    print(f"trainer: kafka {settings.kafka_bootstrap}, mlflow {settings.mlflow_tracking_uri}, "
          f"store {redact_url(settings.resolved_store_url())}, methods: {', '.join(sorted(registry.methods)) or 'none'}",
          flush=True)
    start_metrics_server(settings, "trainer")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        trainer.run(stop)
    except KeyboardInterrupt:
        stop.set()
    return 0
