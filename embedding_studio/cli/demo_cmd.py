from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.models import ModelReady
    from schemas.settings import Settings
    from schemas.tasks import TaskStatus

HELP = "Watch clicks become a better model: simulated shoppers, the whole pipeline, base vs fine-tuned."
DESCRIPTION = (
    "Runs everything on embedded parts (no Docker): a tansu broker, an MLflow server, a stream worker and "
    "the trainer. Simulated shoppers search the demo shop (ingest/data/shop_catalog.json: plainly described "
    "outdoor gear, searched in the shop's slang) and see the current model's top 10; a position-biased click "
    "model decides what they click, and some mark a search irrelevant. The sessions travel through the "
    "producer SDK, Kafka, the stream worker and the session store; their batch closes and the trainer "
    "fine-tunes the model (Optuna trials, progress bars). When the new model is announced, base and "
    "fine-tuned models are compared on held-out queries (the same slang in new combinations): nDCG@10 and "
    "Recall@10, printed and drawn in a PNG chart. Exit code 1 when the pipeline fails."
)

DEFAULT_SESSIONS = 1600
DEFAULT_TRIALS = 3
DEFAULT_EPOCHS = 3


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS,
                        help=f"Simulated search sessions, all in one batch (default {DEFAULT_SESSIONS}).")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the simulated users (same seed, same clicks).")
    parser.add_argument("--model", metavar="PATH",
                        help="Starting model, a SentenceTransformer folder (default: all-MiniLM-L6-v2).")
    parser.add_argument("--out", metavar="DIR", default="out/demo",
                        help="Folder for the chart, demo-metrics.png (default ./out/demo).")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"Optuna trials of the fine-tuning task (default {DEFAULT_TRIALS}).")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"Epochs per trial (default {DEFAULT_EPOCHS}).")
    parser.add_argument("--keep-running", action="store_true",
                        help="Leave the system up afterwards (to explore MLflow) until Ctrl-C.")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    import tempfile

    from embedding_studio.embedded.pipeline import PipelineDriver, PipelineError, download_model, quiet_output
    from embedding_studio.embedded.system import EmbeddedSystem
    from ingest.shop_catalog import load_shop
    from ingest.user_simulator import simulate_sessions, summarise
    from trainer.retrieval_eval import CorpusIndex, evaluate_model, ranker
    from trainer.serving import load_model

    if args.sessions < 10:
        print("--sessions must be at least 10: the trainer holds some out to measure the model")
        return 2
    started = time.monotonic()
    quiet_output()
    shop = load_shop()
    train_queries, held_out = shop.split(seed=0)
    ids = [item.object_id for item in shop.items]
    texts = [item.text for item in shop.items]
    held_out_texts = {q.query_id: q.text for q in held_out}
    judgments = {q.query_id: {object_id: 1.0 for object_id in q.relevant} for q in held_out}
    model_dir = Path(args.model) if args.model else _minilm()
    print(f"{shop.name}: {len(shop.items)} products described plainly, searched in the shop's slang "
          f"({sum(len(c['slang']) for c in shop.categories)} terms); {len(held_out)} held-out queries, e.g. "
          + ", ".join(repr(q.text) for q in held_out[:3]))
    print(f"starting model: {model_dir}")

    base = load_model(str(model_dir), device="cpu")
    base_index = CorpusIndex.build(base, ids, texts)
    base_metrics = evaluate_model(base, base_index, held_out_texts, judgments)
    print(f"base model on held-out queries: nDCG@10 {base_metrics['ndcg_at_10']:.3f}, "
          f"Recall@10 {base_metrics['recall_at_10']:.3f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="es-demo-") as data_dir:
        settings = _demo_settings(Path(data_dir), model_dir, args)
        print("starting the embedded system (broker, MLflow, stream worker, trainer)...", flush=True)
        with EmbeddedSystem(settings, workers=1, trainer=True, training_overrides={"progress_bar": True}) as system:
            tracking_uri = system.settings.mlflow_tracking_uri
            print(f"mlflow UI: {tracking_uri}   broker: {system.bootstrap}   logs: {system.logs_dir}", flush=True)
            # The users see what the current model ranks first: here, the starting model.
            sessions = simulate_sessions(
                [q.as_sim_query() for q in train_queries], ranker(base, base_index), args.sessions,
                item_meta=lambda object_id: {"text": shop.texts[object_id]}, seed=args.seed,
                session_prefix=f"demo-{args.seed}",
            )
            print(f"simulated shoppers: {summarise(sessions).line()}")
            print(f"sending {len(sessions)} sessions through the producer SDK; the batch closes at "
                  f"{settings.batch_max_sessions} sessions and the trainer starts "
                  f"({settings.train_trials} trial(s) x {settings.train_epochs} epoch(s))", flush=True)
            try:
                with PipelineDriver(system.settings, problems=system.problems) as driver:
                    outcome = driver.run([s.events for s in sessions], on_status=_status_printer())
            except PipelineError as error:
                print(f"demo failed: {error}")
                print(f"(logs of the stream worker: {system.logs_dir})")
                return 1
            print(f"task {outcome.task_id} done in {outcome.timings['task_s']:.0f} s: {outcome.status.detail}")

            if outcome.model_ready is None:
                print("the trainer kept the starting model (no trial beat it on the held-out sessions); "
                      "the fine-tuned figures below are the starting model's")
                tuned_metrics = base_metrics
            else:
                ready = outcome.model_ready
                print(f"ModelReady: {ready.model_uri} (run {ready.run_id}, {ready.embedding_dim} dimensions)")
                tuned = load_model(str(download_model(ready, tracking_uri, Path(data_dir) / "tuned")), device="cpu")
                tuned_metrics = evaluate_model(tuned, CorpusIndex.build(tuned, ids, texts), held_out_texts, judgments)

            _print_comparison(base_metrics, tuned_metrics, len(held_out))
            chart = _chart(Path(args.out), base_metrics, tuned_metrics, outcome.model_ready, tracking_uri)
            print(f"chart: {chart}")
            print(f"mlflow UI: {tracking_uri} (experiment 'iteration / {settings.default_fine_tuning_method} / "
                  f"{outcome.batch.batch_id}': one run per trial)")
            print(f"demo took {time.monotonic() - started:.0f} s", flush=True)
            if args.keep_running:
                _keep_running(system)
    return 0


def _minilm() -> Path:
    from trainer.tiny_model import minilm_path

    return minilm_path()


def _demo_settings(data_dir: Path, model_dir: Path, args: argparse.Namespace) -> Settings:
    from schemas.settings import Settings

    settings = Settings()  # the default method ships inside the package: no plugins folder needed
    return settings.model_copy(update={
        "data_dir": data_dir,
        "store_url": None,  # a fresh SQLite store under the demo's folder
        "base_model": str(model_dir),
        "items_url": None,  # item texts travel with the results, as meta["text"]
        "batch_max_sessions": args.sessions,
        "train_trials": args.trials,
        "train_epochs": args.epochs,
        "auto_train": True,
        # Short consumer-group timings: tansu holds every group join for half the session timeout.
        "stream_session_timeout_s": 2.0,
        "stream_heartbeat_interval_s": 0.5,
        "sessionizer_processes": 1,
    })


def _status_printer():
    last: dict[str, tuple] = {}

    def show(status: TaskStatus) -> None:
        progress = status.progress
        key = (status.status, progress.stage, progress.trial)
        if last.get(status.task_id) == key:
            return
        last[status.task_id] = key
        where = progress.stage
        if progress.trials:
            where += f", trial {progress.trial}/{progress.trials}"
        print(f"  task {status.task_id[:8]}: {status.status.value} ({where})", flush=True)

    return show


def _print_comparison(base: dict[str, float], tuned: dict[str, float], queries: int) -> None:
    print(f"held-out queries: {queries} (slang terms seen in training, in combinations never searched)")
    print(f"{'metric':<10} {'base':>7} {'fine-tuned':>11} {'lift':>8}")
    for name, label in (("ndcg_at_10", "nDCG@10"), ("recall_at_10", "Recall@10")):
        print(f"{label:<10} {base[name]:>7.3f} {tuned[name]:>11.3f} {tuned[name] - base[name]:>+8.3f}")


def _chart(out_dir: Path, base: dict[str, float], tuned: dict[str, float], ready: ModelReady | None,
           tracking_uri: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embedding_studio.embedded.pipeline import trial_histories

    curves = trial_histories(tracking_uri, ready) if ready is not None else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 2 if curves else 1, figsize=(11 if curves else 6, 4.2), squeeze=False)
    bars = axes[0][0]
    names = [("ndcg_at_10", "nDCG@10"), ("recall_at_10", "Recall@10")]
    positions = range(len(names))
    width = 0.38
    for offset, (label, values, colour) in enumerate((("base", base, "#9aa5b1"), ("fine-tuned", tuned, "#2f7ed8"))):
        heights = [values[name] for name, _ in names]
        drawn = bars.bar([p + (offset - 0.5) * width for p in positions], heights, width, label=label, color=colour)
        bars.bar_label(drawn, fmt="%.3f", fontsize=8)
    bars.set_xticks(list(positions), [label for _, label in names])
    bars.set_ylim(0, 1.05)
    bars.set_title("Held-out queries, whole catalog")
    bars.legend(loc="upper left")
    if curves:
        lines = axes[0][1]
        baseline = ready.baseline_metrics.get(ready.main_metric)
        for name, points in curves.items():
            # Each validation, from the starting model's score at step 0; the run's summary (its
            # best value, logged again one step after it) is left out.
            kept = [(s, v) for s, v in points if (s - 1, v) not in set(points)]
            if baseline is not None:
                kept = [(0, baseline), *kept]
            lines.plot([s for s, _ in kept], [v for _, v in kept], marker="o", label=name)
        if baseline is not None:
            lines.axhline(baseline, color="#9aa5b1", linestyle="--", label="starting model")
        lines.set_xlabel("training step")
        lines.set_ylabel("nDCG@10 (reranking held-out sessions)")
        lines.set_title("Optuna trials")
        lines.legend(fontsize=7)
    figure.tight_layout()
    path = out_dir / "demo-metrics.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _keep_running(system) -> None:
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("the system keeps running (--keep-running); Ctrl-C stops it", flush=True)
    try:
        while not stop.wait(2.0):
            problems = system.problems()
            if problems:
                print("stopping: " + "; ".join(problems), flush=True)
                return
    except KeyboardInterrupt:
        pass
