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
    "the trainer. Simulated shoppers search the demo shop (simulation/data/shop_catalog.json: plainly described "
    "outdoor gear, searched in the shop's slang) and see the current model's top 10; a position-biased click "
    "model decides what they click, and some mark a search irrelevant. The sessions travel through the "
    "producer SDK, Kafka, the stream worker and the session store; their batch closes and the trainer "
    "fine-tunes the model (Optuna trials, progress bars). When the new model is announced, base and "
    "fine-tuned models are compared on held-out queries (the same slang in new combinations): nDCG@10 and "
    "Recall@10, printed and drawn in a PNG chart. Meanwhile the indexer has embedded the catalog with the "
    "starting model into Milvus Lite (index v1) and, on the announcement, re-embeds it with the new model (v2); "
    "the demo ends with a few held-out searches side by side: v1 next to what the search endpoint answers now, "
    "relevant products marked. Exit code 1 when the pipeline fails."
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
    import json
    import sys
    import tempfile

    from embedding_studio.embedded.pipeline import quiet_output
    from embedding_studio.embedded.system import EmbeddedSystem
    from simulation.shop_catalog import load_shop
    from trainer.retrieval_eval import CorpusIndex, evaluate_model
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

    # The final report is printed once every part has stopped: nothing of theirs can follow it.
    report: list[str] = []
    code = 0
    with tempfile.TemporaryDirectory(prefix="es-demo-") as data_dir:
        catalog = Path(data_dir) / "catalog.jsonl"
        catalog.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts)))
        settings = _demo_settings(Path(data_dir), model_dir, args, catalog)
        print("starting the embedded system (broker, MLflow, stream worker, trainer, Milvus Lite index, indexer, "
              "search endpoint)...", flush=True)
        bars = sys.stdout.isatty()  # a plain log gets one line per epoch from the task statuses instead
        with EmbeddedSystem(settings, workers=1, trainer=True, training_overrides={"progress_bar": bars}) as system:
            tracking_uri = system.settings.mlflow_tracking_uri
            print(f"mlflow UI: {tracking_uri}   broker: {system.bootstrap}   search: {system.search_url}   "
                  f"logs: {system.logs_dir}", flush=True)
            index_events = _IndexEvents(system.settings)
            try:
                code = _round(args, system, shop, train_queries, held_out, base, base_index, base_metrics,
                              index_events, report, started, ids, texts, held_out_texts, judgments)
            finally:
                index_events.close()
            if args.keep_running:
                print("\n".join(report), flush=True)
                report = []
                _keep_running(system)
    if report:
        print("\n".join(report))
        print(f"demo took {time.monotonic() - started:.0f} s", flush=True)
    return code


def _round(args, system, shop, train_queries, held_out, base, base_index, base_metrics, index_events, report,
           started, ids, texts, held_out_texts, judgments) -> int:
    from embedding_studio.embedded.pipeline import PipelineDriver, PipelineError, download_model
    from simulation.user_simulator import simulate_sessions, summarise
    from trainer.retrieval_eval import CorpusIndex, evaluate_model, ranker
    from trainer.serving import load_model

    settings = system.settings
    tracking_uri = settings.mlflow_tracking_uri
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
        with PipelineDriver(settings, problems=system.problems) as driver:
            outcome = driver.run([s.events for s in sessions], on_status=_status_printer())
    except PipelineError as error:
        report.append(f"demo failed: {error}")
        report.append(f"(logs of the stream worker, indexer and search endpoint: {system.logs_dir})")
        return 1
    print(f"task {outcome.task_id} done in {outcome.timings['task_s']:.0f} s: {outcome.status.detail}", flush=True)

    if outcome.model_ready is None:
        report.append("the trainer kept the starting model (no trial beat it on the held-out sessions); "
                      "the fine-tuned figures below are the starting model's")
        tuned_metrics = base_metrics
    else:
        ready = outcome.model_ready
        print(f"ModelReady: {ready.model_uri} (run {ready.run_id}, {ready.embedding_dim} dimensions); "
              "the indexer re-embeds the catalog...", flush=True)
        tuned = load_model(str(download_model(ready, tracking_uri, Path(settings.data_dir) / "tuned")), device="cpu")
        tuned_metrics = evaluate_model(tuned, CorpusIndex.build(tuned, ids, texts), held_out_texts, judgments)

    _print_comparison(base_metrics, tuned_metrics, len(held_out), report.append)
    if outcome.model_ready is not None:
        refreshed = index_events.wait(lambda e: e.task_id == outcome.task_id, timeout_s=600, problems=system.problems)
        if refreshed is None:
            report.append("the index was not refreshed in time: see the indexer's log in " + str(system.logs_dir))
            return 1
        report.append(f"index refreshed: v{refreshed.version} serves {refreshed.item_count} items embedded with "
                      f"the new model in {refreshed.seconds:.1f} s (v{refreshed.previous_version} kept for "
                      "`embedding-studio index rollback`)")
        _side_by_side(system, held_out, refreshed, report.append)
    chart = _chart(Path(args.out), base_metrics, tuned_metrics, outcome.model_ready, tracking_uri)
    report.append(f"chart: {chart}")
    report.append(f"mlflow UI: {tracking_uri} (experiment 'iteration / {settings.default_fine_tuning_method} / "
                  f"{outcome.batch.batch_id}': one run per trial)")
    return 0


class _IndexEvents:
    """The IndexReady events of this demo's system."""

    def __init__(self, settings: Settings):
        from messaging import EventReader as TopicReader
        from schemas.index import IndexReady

        self.reader = TopicReader(settings.kafka_bootstrap, settings.topics().index_ready.name, IndexReady)
        self.events: list = []

    def wait(self, condition, timeout_s: float, problems):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.events += self.reader.poll(0.5)
            found = next((e for e in self.events if condition(e)), None)
            if found is not None or problems():
                return found
        return None

    def close(self) -> None:
        self.reader.close()


def _side_by_side(system, held_out, refreshed, say, queries: int = 4, k: int = 5) -> None:
    """A few held-out queries through the index: the version before the refresh (the starting model)
    next to the served one, answered by the search endpoint; ✓ marks a relevant product."""
    import json
    import urllib.parse
    import urllib.request

    from index.factory import open_index
    from index.search import SearchService

    with open_index(system.settings) as index:
        before_version = next(v for v in index.versions() if v.version == refreshed.previous_version)
        service = SearchService(index, system.settings.mlflow_tracking_uri, system.settings.embed_precision)
        width = 44
        say(f"\nheld-out searches, top {k}: index v{before_version.version} (starting model)  |  the search endpoint "
            f"now (v{refreshed.version}, fine-tuned)")
        for query in held_out[:queries]:
            before = service.search(query.text, k, version=before_version).hits
            url = f"{system.search_url}/search?" + urllib.parse.urlencode({"q": query.text, "k": k, "log": "false"})
            with urllib.request.urlopen(url, timeout=60) as response:
                after = json.loads(response.read())
            relevant = set(query.relevant)
            mark = lambda object_id: "✓" if object_id in relevant else " "  # noqa: E731
            hits_before = sum(h.object_id in relevant for h in before)
            hits_after = sum(r["object_id"] in relevant for r in after["results"])
            say(f"  {query.text!r}: {hits_before} → {hits_after} relevant in the top {k} "
                f"(answered by v{after['answered_by']['version']})")
            for rank in range(k):
                left = before[rank] if rank < len(before) else None
                right = after["results"][rank] if rank < len(after["results"]) else None
                left_text = f"{mark(left.object_id)} {left.text}" if left else ""
                right_text = f"{mark(right['object_id'])} {right['text']}" if right else ""
                say(f"    {rank + 1}. {_clip(left_text, width):<{width}}  |  {_clip(right_text, width)}")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _minilm() -> Path:
    from trainer.base_model import minilm_path

    return minilm_path()


def _demo_settings(data_dir: Path, model_dir: Path, args: argparse.Namespace, catalog: Path) -> Settings:
    from schemas.settings import Settings

    settings = Settings()  # the default method ships inside the package: no plugins folder needed
    return settings.model_copy(update={

        "data_dir": data_dir,
        "store_url": None,  # a fresh SQLite store under the demo's folder
        "base_model": str(model_dir),
        # The trainer reads item texts from the results' meta; the indexer lists the catalog from here.
        "items_url": catalog.resolve().as_uri(),
        "search_port": 0,
        "milvus_uri": None,
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
        key = (status.status, progress.stage, progress.trial, progress.epoch)
        if last.get(status.task_id) == key:
            return
        last[status.task_id] = key
        where = progress.stage
        if progress.trials:
            where += f", trial {progress.trial}/{progress.trials}"
        if progress.epoch:  # 1-based once the trial's first step is done
            where += f", epoch {progress.epoch}/{progress.epochs}"
        print(f"  task {status.task_id[:8]}: {status.status.value} ({where})", flush=True)

    return show


def _print_comparison(base: dict[str, float], tuned: dict[str, float], queries: int, say=print) -> None:
    say(f"held-out queries: {queries} (slang terms seen in training, in combinations never searched)")
    say(f"{'metric':<10} {'base':>7} {'fine-tuned':>11} {'lift':>8}")
    for name, label in (("ndcg_at_10", "nDCG@10"), ("recall_at_10", "Recall@10")):
        say(f"{label:<10} {base[name]:>7.3f} {tuned[name]:>11.3f} {tuned[name] - base[name]:>+8.3f}")


def _chart(out_dir: Path, base: dict[str, float], tuned: dict[str, float], ready: ModelReady | None,
           tracking_uri: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embedding_studio.embedded.pipeline import trial_baseline, trial_histories

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
        baseline = trial_baseline(tracking_uri, ready)
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
        lines.set_ylabel("nDCG@10 (validation queries, whole catalog)")
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
