"""Does fine-tuning on clicks improve search? Simulated users, the real pipeline, held-out queries.

``make bench-quality DATASET=../shared/datasets/scifact`` (or ``python -m bench.quality --dataset DIR``)
over a folder in the BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels.tsv`` or
``qrels_train.tsv`` + ``qrels_test.tsv``):

1. queries are split into training and test queries: the official split when the folder has one,
   otherwise half and half by a hash of the query id (the same split every run);
2. the starting model (all-MiniLM-L6-v2 unless ``--model``) embeds the corpus once (kept on disk for
   later runs, keyed by the model's weights and the texts) and is measured on the test queries;
3. simulated users search every training query ``--sessions-per-query`` times, see the starting
   model's top 10 over the whole corpus and click by a position-biased click model
   (``simulation.click_model``), with the qrels as the truth they judge by;
4. the sessions go through the real pipeline of an ``EmbeddedSystem``: producer SDK → Kafka →
   stream worker → session store → closed batch → trainer (Optuna trials of a Lightning fine-tune,
   MLflow) → ModelReady. Item texts reach the trainer through ``ES_ITEMS_URL``, a JSONL catalog
   written to a temporary folder from the corpus (title and text); the fine-tuning method is a
   bench plugin in a temporary ``ES_PLUGINS_PATH`` (loss, learning rates, held-out share);
5. the announced model is measured on the test queries over the whole corpus;
6. two references on the same test queries: sentence-transformers' own trainer with
   MultipleNegativesRankingLoss on the clicked (query, item) pairs of the same sessions, from the
   same starting model, for the same epochs; and BM25 (k1 0.9, b 0.4).

Figures (``name: value`` lines, as ``make bench``): ``base_ndcg10``, ``tuned_ndcg10``,
``st_mnrl_ndcg10``, ``bm25_ndcg10`` and the same four with ``recall10``; then the data and time
behind them; progress goes to stderr.

Defaults: 4 sessions per training query, examination 1/rank**0.5, one epoch, learning rate 1e-4 for
ours and MNRL alike, a quarter of each session's skipped results kept as hard negatives, batches of
16, no mined negatives, no WiSE-FT. The trainer's search space is the shipped default method's
(``plugins.default_fine_tuning_method.initial_params``), whose first choices its first trial trains:
with one trial the bench measures exactly the recipe the default method ships, and ``--lr`` or
``--negative-downsampling`` only move their value to the front of that space. The recipe was
screened with ``--dev`` (a third of SciFact's training queries measured on, its test queries unused;
``bench/results/dev/scifact-*.json``): three epochs, mined negatives, lr 5e-5 and batches of 64 with
gradient caching each measured below one epoch at 1e-4, WiSE-FT mixes did not validate better than
the tuned weights, and one skipped negative per session measured 0.005 above, inside the noise. ``candidate_ndcg10`` is the trainer's best model measured whether or not its
gate announced it (the bench keeps rejected models, ``ES_KEEP_REJECTED_MODELS``), which tells a weak
recipe from a gate that could not see a lift. ``--max-seq-length`` cuts every text for every model,
in training and in search alike; on a CPU it defaults to 128 tokens (a SciFact run then takes about
a quarter of an hour on two cores instead of about an hour at MiniLM's 256), on a GPU to the model's
own. Training at one length and searching at another is not offered: a model tuned on 128-token
abstracts and searched at 256 lost its whole lift on SciFact.

Why one module of some 720 lines: one command, read top to bottom — the dataset, the pipeline run,
the two references (MNRL, oracle), the seeds' summary, the result file and the README table — and
none of it is imported by the system itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

Figure = tuple[str, object]

METHOD = "Quality Bench Method"
# A CPU trains and embeds SciFact abstracts at 128 tokens about three times faster than at MiniLM's 256.
CPU_MAX_SEQ_LENGTH = 128
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedding-studio" / "bench-quality"

PLUGIN_SOURCE = '''"""Written by bench/quality.py: the fine-tuning method of the quality bench."""
from pathlib import Path

from trainer.loaders import open_item_loader
from trainer.plugins import FineTuningBuilder, FineTuningMethod, FineTuningSettings, PluginMeta


class QualityBenchMethod(FineTuningMethod):
    meta = PluginMeta(name={name!r}, version="1.0.0",
                      description="Text-to-text retrieval for the quality bench; item texts from ES_ITEMS_URL.")

    def upload_initial_model(self):
        self.context.tracker.upload_initial_model(Path(self.context.settings.base_model))

    def get_fine_tuning_builder(self, clickstream):
        settings = self.context.settings
        return FineTuningBuilder(
            clickstream=clickstream,
            item_loader=open_item_loader(settings.items_url),
            initial_params={grid!r},
            fine_tuning_settings=FineTuningSettings(
                loss={loss!r}, epochs=settings.train_epochs, batch_size=settings.train_batch_size,
                trials=settings.train_trials, test_fraction=settings.train_test_fraction,
                validation_fraction=settings.train_validation_fraction, seed={seed!r},
                wise_ft_alphas={wise!r}, mined_negatives={mined!r}, grad_cache_chunk={chunk!r},
                refit=settings.train_refit,
            ),
        )
'''


# --- the dataset ------------------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    ids: list[str]
    texts: list[str]
    queries: dict[str, str]
    train: dict[str, dict[str, float]]  # query id -> {doc id -> gain}
    test: dict[str, dict[str, float]]
    split: str


def load_dataset(folder: str | Path) -> Dataset:
    folder = Path(folder)
    if not (folder / "corpus.jsonl").is_file():
        raise FileNotFoundError(f"{folder} has no corpus.jsonl: not a BEIR-layout folder")
    ids, texts = [], []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                ids.append(str(record["_id"]))
                texts.append(document_text(record.get("title") or "", record.get("text") or ""))
    queries = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                queries[str(record["_id"])] = record["text"]
    if (folder / "qrels_train.tsv").is_file() and (folder / "qrels_test.tsv").is_file():
        train, test = read_qrels(folder / "qrels_train.tsv"), read_qrels(folder / "qrels_test.tsv")
        split = "official train/test qrels"
    else:
        train, test = split_by_hash(read_qrels(folder / "qrels.tsv"))
        split = "queries split 50/50 by a hash of their id"
    return Dataset(folder.name, ids, texts, queries, _judged(train, queries), _judged(test, queries), split)


def document_text(title: str, text: str) -> str:
    """As ``trainer.loaders.local.JsonlCatalogLoader`` joins a BEIR title and text."""
    return f"{title}. {text}" if title else text


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    qrels: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as lines:
        header = next(lines).rstrip("\n").split("\t")
        q, d, s = header.index("query-id"), header.index("corpus-id"), header.index("score")
        for line in lines:
            fields = line.rstrip("\n").split("\t")
            if len(fields) > max(q, d, s):
                qrels.setdefault(fields[q], {})[fields[d]] = float(fields[s])
    return qrels


def split_by_hash(qrels: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    train, test = {}, {}
    for query_id, judged in qrels.items():
        side = test if hashlib.sha256(f"split:{query_id}".encode()).digest()[0] < 128 else train
        side[query_id] = judged
    return train, test


def dev_split(data: Dataset) -> Dataset:
    """A third of the training queries (by a hash of their id) as the queries measured on; the test
    queries are dropped, so that choosing a default never looks at them."""
    dev = {q: j for q, j in data.train.items() if hashlib.sha256(f"dev:{q}".encode()).digest()[0] < 86}
    train = {q: j for q, j in data.train.items() if q not in dev}
    return Dataset(data.name, data.ids, data.texts, data.queries, train, dev,
                   "dev split: a third of the training queries by a hash of their id (test queries unused)")


def _judged(qrels: dict[str, dict[str, float]], queries: dict[str, str]) -> dict[str, dict[str, float]]:
    """Queries that have a text and at least one relevant document."""
    return {q: judged for q, judged in qrels.items() if q in queries and any(g > 0 for g in judged.values())}


def _first_by_hash(query_ids: Sequence[str], n: int | None) -> list[str]:
    ordered = sorted(query_ids, key=lambda q: hashlib.sha256(f"pick:{q}".encode()).hexdigest())
    return ordered if n is None else ordered[:n]


# --- the bench ----------------------------------------------------------------------------------------


@dataclass
class Options:
    max_queries: int | None = None
    trials: int = 1
    epochs: int = 1
    seed: int = 0
    sessions_per_query: int = 4
    # Tokens each text is cut to, for every model, in training and in search alike; None: the model's
    # own (256 for MiniLM). On a CPU the default is CPU_MAX_SEQ_LENGTH (see main).
    max_seq_length: int | None = None
    model: str | None = None
    lr: float = 1e-4
    eta: float = 0.5
    negative_downsampling: float = 0.25
    # Shares of the training queries the trainer itself holds out (its own validation and test
    # queries, drawn from the bench's training queries; the bench's test queries stay unseen).
    trainer_test_fraction: float = 0.3
    trainer_validation_fraction: float = 0.15
    min_test_queries: int = 30
    wise_ft_alphas: tuple[float, ...] = ()
    mined_negatives: int = 0
    grad_cache_chunk: int | None = None
    refit: bool = False
    oracle: bool = True
    mnrl: bool = True
    # Measure on a dev split of the training queries instead of the test queries: how defaults are chosen.
    dev: bool = False
    batch_size: int = 16
    cache_dir: Path | None = DEFAULT_CACHE
    say: Callable[[str], None] | None = None  # progress lines (default: stderr)


def bench_quality(dataset_dir: str | Path, options: Options = Options()) -> Iterator[Figure]:
    import torch

    from bench.bm25 import BM25
    from embedding_studio.embedded.pipeline import quiet_output
    from trainer.retrieval_eval import CorpusIndex, evaluate_model, model_key, score_rankings
    from trainer.serving import load_model

    say = options.say or (lambda line: print(line, file=sys.stderr, flush=True))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    quiet_output()
    torch.manual_seed(options.seed)
    started = time.monotonic()
    data = load_dataset(dataset_dir)
    if options.dev:
        data = dev_split(data)
    train_ids = _first_by_hash(list(data.train), options.max_queries)
    test_queries = {q: data.queries[q] for q in data.test}
    yield "dataset", data.name
    yield "split", data.split
    yield "corpus_docs", len(data.ids)
    yield "train_queries", len(train_ids)
    yield "test_queries", len(test_queries)

    with tempfile.TemporaryDirectory(prefix="es-bench-quality-") as tmp:
        work = Path(tmp)
        model_dir = _starting_model(options.model, options.max_seq_length, work)
        base = load_model(str(model_dir), device=device)
        yield "device", device
        yield "max_seq_length", base.max_seq_length

        mark = time.monotonic()
        say(f"embedding {len(data.ids)} documents with the starting model (cached after the first run)...")
        base_index = CorpusIndex.build(base, data.ids, data.texts, progress=False, cache_dir=options.cache_dir,
                                       model_key=model_key(model_dir))
        base_metrics = evaluate_model(base, base_index, test_queries, data.test)
        yield "base_eval_s", time.monotonic() - mark

        mark = time.monotonic()
        bm25 = BM25(data.ids, data.texts)
        bm25_metrics = score_rankings({q: [d for d, _ in bm25.search(text, 10)] for q, text in test_queries.items()},
                                      data.test)
        yield "bm25_eval_s", time.monotonic() - mark

        # --- simulated users on the training queries, through the real pipeline -----------------
        sessions, pipeline_figures, tuned_dir, candidate_dir = _through_the_pipeline(
            data, train_ids, base, base_index, model_dir, options, work, say)
        yield from pipeline_figures
        mark = time.monotonic()
        candidate_metrics = base_metrics
        if candidate_dir is not None:
            say(f"embedding {len(data.ids)} documents with the trainer's best model "
                f"({'announced' if tuned_dir is not None else 'not announced'})...")
            candidate = load_model(str(candidate_dir), device=device)
            candidate_metrics = evaluate_model(candidate, CorpusIndex.build(candidate, data.ids, data.texts),
                                               test_queries, data.test)
        if tuned_dir is None:
            say("the trainer announced no better model: the tuned figures are the starting model's")
        # What users get: the announced model, else the starting one.
        tuned_metrics = candidate_metrics if tuned_dir is not None else base_metrics
        yield "tuned_eval_s", time.monotonic() - mark

        # --- the sentence-transformers reference on the same clicks ------------------------------
        texts_by_id = dict(zip(data.ids, data.texts))
        pairs = [(s.query.text, texts_by_id[s.shown[p]]) for s in sessions for p in s.reaction.clicked
                 if not s.reaction.marked_irrelevant]
        yield "st_mnrl_pairs", len(pairs)
        mnrl_metrics = None
        if options.mnrl:
            mark = time.monotonic()
            say(f"sentence-transformers MNRL on {len(pairs)} clicked pairs, {options.epochs} epoch(s)...")
            mnrl = train_mnrl(model_dir, pairs, options, work / "mnrl", device)
            yield "st_mnrl_train_s", time.monotonic() - mark
            mark = time.monotonic()
            say(f"embedding {len(data.ids)} documents with the MNRL model...")
            mnrl_metrics = evaluate_model(mnrl, CorpusIndex.build(mnrl, data.ids, data.texts), test_queries, data.test)
            yield "st_mnrl_eval_s", time.monotonic() - mark

        # --- the oracle: the same model fine-tuned on the training queries' true judgments ---------
        oracle_metrics = None
        if options.oracle:
            truth = [(data.queries[q], texts_by_id[d]) for q in train_ids for d, g in sorted(data.train[q].items())
                     if g > 0 and d in texts_by_id]
            mark = time.monotonic()
            say(f"oracle: MNRL on the {len(truth)} true (training query, relevant document) pairs...")
            oracle = train_mnrl(model_dir, truth, options, work / "oracle", device)
            oracle_metrics = evaluate_model(oracle, CorpusIndex.build(oracle, data.ids, data.texts), test_queries,
                                            data.test)
            yield "oracle_pairs", len(truth)
            yield "oracle_s", time.monotonic() - mark

    for name, short in (("ndcg_at_10", "ndcg10"), ("recall_at_10", "recall10")):
        yield f"base_{short}", base_metrics[name]
        yield f"tuned_{short}", tuned_metrics[name]
        if mnrl_metrics is not None:
            yield f"st_mnrl_{short}", mnrl_metrics[name]
        yield f"bm25_{short}", bm25_metrics[name]
        if oracle_metrics is not None:
            yield f"oracle_{short}", oracle_metrics[name]
    # The trainer's best model whether announced or not: separates a weak recipe from a strict gate.
    yield "candidate_ndcg10", candidate_metrics["ndcg_at_10"]
    yield "candidate_lift_ndcg10", candidate_metrics["ndcg_at_10"] - base_metrics["ndcg_at_10"]
    lift = tuned_metrics["ndcg_at_10"] - base_metrics["ndcg_at_10"]
    yield "tuned_lift_ndcg10", lift
    if oracle_metrics is not None:
        room = oracle_metrics["ndcg_at_10"] - base_metrics["ndcg_at_10"]
        yield "lift_share", lift / room if room > 0 else float("nan")
    yield "announced", int(tuned_dir is not None)
    yield "regression_announced", int(tuned_dir is not None and lift < 0)
    yield "quality_duration_s", time.monotonic() - started


def _starting_model(model: str | None, max_seq_length: int | None, work: Path) -> Path:
    """The starting model's folder (MiniLM unless ``model``); with ``max_seq_length``, a copy that
    truncates texts there."""
    from sentence_transformers import SentenceTransformer

    from trainer.base_model import minilm_path

    source = Path(model) if model else minilm_path()
    if max_seq_length is None:
        return source
    copy = SentenceTransformer(str(source), device="cpu")
    copy.max_seq_length = max_seq_length
    target = work / f"start-{max_seq_length}"
    copy.save(str(target), safe_serialization=True, create_model_card=False)
    return target


def _through_the_pipeline(data: Dataset, train_ids: list[str], base, base_index, model_dir: Path, options: Options,
                          work: Path, say) -> tuple[list, list[Figure], Path | None]:
    from embedding_studio.embedded.pipeline import PipelineDriver, download_model
    from embedding_studio.embedded.system import EmbeddedSystem
    from simulation.click_model import PositionBiasedClickModel
    from simulation.user_simulator import SimQuery, simulate_sessions, summarise
    from schemas.settings import Settings
    from trainer.retrieval_eval import ranker

    figures: list[Figure] = []
    click_model = PositionBiasedClickModel(eta=options.eta, max_gain=max(
        (g for judged in data.train.values() for g in judged.values()), default=1.0))
    queries = [SimQuery(q, data.queries[q], data.train[q]) for q in train_ids]
    mark = time.monotonic()
    sessions = simulate_sessions(queries, ranker(base, base_index), len(queries) * options.sessions_per_query,
                                 click_model=click_model, seed=options.seed, session_prefix=f"bq-{options.seed}")
    summary = summarise(sessions)
    say(f"simulated users: {summary.line()}")
    figures += [("sessions", summary.sessions), ("clicks", summary.clicks),
                ("relevant_clicks", summary.relevant_clicks), ("marked_irrelevant", summary.marked_irrelevant),
                ("simulate_s", time.monotonic() - mark)]

    catalog = work / "catalog.jsonl"
    with catalog.open("w", encoding="utf-8") as out:
        for object_id, text in zip(data.ids, data.texts):
            out.write(json.dumps({"id": object_id, "text": text}) + "\n")
    plugins = work / "plugins"
    plugins.mkdir()
    (plugins / "quality_bench_method.py").write_text(PLUGIN_SOURCE.format(
        name=METHOD, grid=_grid(options), loss="in_batch_contrastive", seed=13 + options.seed,
        wise=tuple(options.wise_ft_alphas), mined=options.mined_negatives, chunk=options.grad_cache_chunk))
    settings = Settings().model_copy(update={
        "data_dir": work / "es", "kafka_bootstrap": None, "mlflow_tracking_uri": None, "store_url": None,
        "plugins_path": str(plugins), "default_fine_tuning_method": METHOD, "base_model": str(model_dir),
        "items_url": catalog.resolve().as_uri(), "batch_max_sessions": len(sessions), "auto_train": True,
        "train_trials": options.trials, "train_epochs": options.epochs, "train_batch_size": options.batch_size,
        "train_refit": options.refit,
        "train_test_fraction": options.trainer_test_fraction,
        "train_validation_fraction": options.trainer_validation_fraction,
        "gate_min_test_queries": options.min_test_queries, "stream_session_timeout_s": 2.0,
        "stream_heartbeat_interval_s": 0.5, "sessionizer_processes": 1,
        "search_port": 0,  # a free port: two benches, or a running `up`, may hold the default one
        "keep_rejected_models": True,  # a model the gate turns down is still measured (candidate_ndcg10)
    })
    mark = time.monotonic()
    say("starting the embedded system and sending the sessions...")
    with EmbeddedSystem(settings, workers=1, trainer=True, training_overrides={"progress_bar": False}) as system:
        with PipelineDriver(system.settings, problems=system.problems, say=say) as driver:
            outcome = driver.run([s.events for s in sessions], on_status=_status_reporter(say))
        say(f"task {outcome.task_id}: {outcome.status.detail}")
        figures.append(("trainer_detail", outcome.status.detail or ""))
        figures += [("pipeline_batch_s", outcome.timings["batch_s"]), ("pipeline_task_s", outcome.timings["task_s"])]
        tuned_dir = candidate_dir = None
        judged = outcome.status.judgement
        if judged is not None:
            figures += [("trainer_metric", judged.metric), ("trainer_lift", judged.lift),
                        ("trainer_lift_ci_low", judged.lift_ci_low), ("trainer_lift_ci_high", judged.lift_ci_high),
                        ("trainer_test_queries", judged.test_queries)]
        if outcome.model_ready is not None:
            ready = outcome.model_ready
            figures += [("trainer_heldout_ndcg10_base", ready.baseline_metrics.get("test_ndcg_at_10", float("nan"))),
                        ("trainer_heldout_ndcg10_tuned", ready.metrics.get("test_ndcg_at_10", float("nan")))]
            tuned_dir = candidate_dir = download_model(ready, system.settings.mlflow_tracking_uri, work / "tuned")
        else:
            from trainer.tracking import ExperimentTracker

            tracker = ExperimentTracker(system.settings.mlflow_tracking_uri)
            rejected = tracker.rejected_model(outcome.task_id)
            if rejected is not None:
                candidate_dir = tracker.download_model(rejected.run_id, work / "candidate")
    figures.append(("pipeline_s", time.monotonic() - mark))
    return sessions, figures, tuned_dir, candidate_dir


def _grid(options: Options) -> dict[str, list]:
    """The shipped default method's search space, with the bench's learning rate and negative share as the
    first values: the first trial trains them, and ``--trials`` above one explores the rest of that space."""
    grid = shipped_grid()
    grid["query_lr"] = _first(options.lr, grid["query_lr"])
    grid["negative_downsampling"] = _first(options.negative_downsampling, grid["negative_downsampling"])
    return grid


def shipped_grid() -> dict[str, list]:
    from plugins.default_fine_tuning_method import initial_params

    return initial_params()


def _first(value: object, choices: list) -> list:
    return [value] + [choice for choice in choices if choice != value]


def _status_reporter(say):
    last = {}

    def report(status) -> None:
        progress = status.progress
        key = (status.status, progress.stage, progress.trial, progress.epoch, progress.step * 10 // max(1, progress.steps))
        if last.get(status.task_id) != key:
            last[status.task_id] = key
            where = progress.stage
            if progress.steps:
                trial = f" trial {progress.trial}/{progress.trials}" if progress.trials else ""
                where += f"{trial} epoch {progress.epoch}/{progress.epochs} step {progress.step}/{progress.steps}"
            say(f"  task {status.task_id[:8]} {status.status.value}: {where}")

    return report


def train_mnrl(model_dir: Path, pairs: list[tuple[str, str]], options: Options, output_dir: Path, device: str = "cpu"):
    """sentence-transformers' trainer, MultipleNegativesRankingLoss, (query, clicked text) pairs."""
    import io
    import warnings
    from contextlib import redirect_stderr

    from datasets import Dataset as HFDataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import PrinterCallback
    from transformers.utils import logging as transformers_logging

    model = SentenceTransformer(str(model_dir), device=device)
    if not pairs:
        return model
    dataset = HFDataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [t for _, t in pairs]})
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = SentenceTransformerTrainingArguments(
                output_dir=str(output_dir), num_train_epochs=options.epochs,
                per_device_train_batch_size=options.batch_size, learning_rate=options.lr, weight_decay=0.01,
                warmup_steps=0.1, max_grad_norm=1.0, seed=options.seed, use_cpu=device == "cpu",
                batch_sampler=BatchSamplers.NO_DUPLICATES, eval_strategy="no", save_strategy="no",
                logging_strategy="no", report_to="none", disable_tqdm=True,
            )
            with redirect_stderr(io.StringIO()):
                trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                                     loss=MultipleNegativesRankingLoss(model))
            trainer.remove_callback(PrinterCallback)
            trainer.train()
    finally:
        transformers_logging.set_verbosity(verbosity)
    return model


# --- command line -------------------------------------------------------------------------------------


def _max_seq_length(asked: int | None) -> int | None:
    if asked is not None:
        return asked or None
    import torch

    return None if torch.cuda.is_available() else CPU_MAX_SEQ_LENGTH


SUMMARISED = ("base_ndcg10", "tuned_ndcg10", "candidate_ndcg10", "st_mnrl_ndcg10", "bm25_ndcg10", "oracle_ndcg10",
              "tuned_lift_ndcg10", "lift_share", "base_recall10", "tuned_recall10", "st_mnrl_recall10",
              "bm25_recall10", "oracle_recall10")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_BEGIN = "<!-- bench-quality table: python -m bench.quality --readme -->"
TABLE_END = "<!-- end of bench-quality table -->"


def summarise_seeds(runs: list[dict[str, object]]) -> dict[str, object]:
    """Mean and spread (sample standard deviation; 0 for one seed) of each figure over the seeds."""
    import statistics

    summary: dict[str, object] = {"seeds": len(runs)}
    for name in SUMMARISED:
        values = [float(run[name]) for run in runs if isinstance(run.get(name), (int, float))]
        values = [v for v in values if v == v]  # nan (no room above the base) is left out
        if values:
            summary[f"{name}_mean"] = statistics.fmean(values)
            summary[f"{name}_spread"] = statistics.stdev(values) if len(values) > 1 else 0.0
    summary["announced"] = sum(int(run.get("announced", 0)) for run in runs)
    summary["regressions_announced"] = sum(int(run.get("regression_announced", 0)) for run in runs)
    return summary


def git_commit() -> str:
    """The commit the bench runs (read when it starts), marked when the tree had uncommitted changes."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=Path(__file__).resolve().parent, text=True, capture_output=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    return commit + ("+uncommitted changes" if dirty else "")


def write_results(path: Path, dataset: str, runs: list[dict[str, object]], summary: dict[str, object],
                  argv: list[str], commit: str) -> Path:
    import platform

    import torch

    # Seeds added in later sittings (--add) keep their own command lines; the record lists each once.
    commands = list(dict.fromkeys(str(run["command"]) for run in runs if "command" in run))
    record = {
        "dataset": dataset,
        "command": "; ".join(commands) or "python -m bench.quality " + " ".join(argv),
        "git_commit": commit,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "summary": summary,
        "runs": runs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def earlier_runs(path: Path, dataset: str, replaced: set[int]) -> list[dict[str, object]]:
    """The runs a result file already holds, but those of the seeds run again; its own command, commit
    and note are kept on each run that lacks them."""
    if not path.is_file():
        return []
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("dataset") != dataset:
        raise SystemExit(f"{path} holds dataset {record.get('dataset')!r}, not {dataset!r}: nothing added")
    runs = []
    for run in record.get("runs", []):
        if run.get("seed") in replaced:
            continue
        carried = {name: record[name] for name in ("command", "git_commit", "note") if name in record}
        runs.append({**carried, **run})
    return runs


def quality_table(results: Sequence[Path]) -> str:
    """The README's quality table, from committed result files (one row pair per dataset)."""
    lines = ["| dataset (test queries, seeds) | base | fine-tuned (announced, else base) | trainer's best model, "
             "before the gate | sentence-transformers MNRL | BM25 | oracle | lift_share | announced (regressions) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(results):
        record = json.loads(path.read_text(encoding="utf-8"))
        summary, runs = record["summary"], record["runs"]

        def cell(name: str) -> str:
            if f"{name}_mean" not in summary:
                return "—"
            spread = summary[f"{name}_spread"]
            return f"{summary[name + '_mean']:.3f}" + (f" ± {spread:.3f}" if summary["seeds"] > 1 else "")

        queries = runs[0].get("test_queries", "?") if runs else "?"
        head = f"{record['dataset']} ({queries}, {summary['seeds']})"
        lines.append(f"| {head}, nDCG@10 | {cell('base_ndcg10')} | {cell('tuned_ndcg10')} | "
                     f"{cell('candidate_ndcg10')} | {cell('st_mnrl_ndcg10')} | "
                     f"{cell('bm25_ndcg10')} | {cell('oracle_ndcg10')} | {cell('lift_share')} | "
                     f"{summary['announced']} ({summary['regressions_announced']}) |")
        lines.append(f"| {record['dataset']}, Recall@10 | {cell('base_recall10')} | {cell('tuned_recall10')} | | "
                     f"{cell('st_mnrl_recall10')} | {cell('bm25_recall10')} | {cell('oracle_recall10')} | | |")
    return "\n".join(lines)


def update_readme(readme: Path = README, results_dir: Path = RESULTS_DIR) -> str:
    text = readme.read_text(encoding="utf-8")
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise SystemExit(f"{readme} has no {TABLE_BEGIN!r} … {TABLE_END!r} section")
    table = quality_table(sorted(results_dir.glob("quality-*.json")))
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    readme.write_text(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}", encoding="utf-8")
    return table


def main(argv: list[str] | None = None) -> int:
    from bench.run import _format

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="A BEIR-layout folder, e.g. ../shared/datasets/scifact")
    parser.add_argument("--readme", action="store_true",
                        help="Rewrite README's quality table from bench/results/quality-*.json and exit.")
    parser.add_argument("--max-queries", type=int, default=None, help="Simulate users on at most N training queries.")
    parser.add_argument("--trials", type=int, default=1, help="Optuna trials (1: the bench's learning rate only).")
    parser.add_argument("--epochs", type=int, default=1, help="Epochs, for ours, MNRL and the oracle alike.")
    parser.add_argument("--seeds", type=int, default=3, help="Runs, with seeds seed, seed+1, ... (default 3).")
    parser.add_argument("--seed", type=int, default=0, help="First seed of the simulated users and of training.")
    parser.add_argument("--sessions-per-query", type=int, default=Options.sessions_per_query,
                        help=f"Sessions per training query (default {Options.sessions_per_query}).")
    parser.add_argument("--max-seq-length", type=int, default=None,
                        help=f"Cut every text at N tokens, for every model, in training and search alike (default: "
                        f"{CPU_MAX_SEQ_LENGTH} on a CPU, the model's own on a GPU; 0: the model's own).")
    parser.add_argument("--model", default=None, help="Starting SentenceTransformer folder (default MiniLM).")
    parser.add_argument("--lr", type=float, default=Options.lr, help=f"Learning rate (default {Options.lr}).")
    parser.add_argument("--negative-downsampling", type=float, default=Options.negative_downsampling,
                        help="Share of each session's skipped results kept as negatives "
                        f"(default {Options.negative_downsampling}).")
    parser.add_argument("--eta", type=float, default=Options.eta,
                        help=f"Position bias: examination 1/rank**eta (default {Options.eta}).")
    parser.add_argument("--trainer-test-fraction", type=float, default=Options.trainer_test_fraction,
                        help="Share of the training queries the trainer holds out to judge its model "
                        f"(default {Options.trainer_test_fraction}).")
    parser.add_argument("--trainer-validation-fraction", type=float, default=Options.trainer_validation_fraction,
                        help=f"Share the trainer validates on (default {Options.trainer_validation_fraction}).")
    parser.add_argument("--min-test-queries", type=int, default=Options.min_test_queries,
                        help=f"ES_GATE_MIN_TEST_QUERIES of the trainer (default {Options.min_test_queries}).")
    parser.add_argument("--wise-ft", type=float, nargs="*", default=[],
                        help="WiSE-FT mixes the trainer tries on its validation queries, e.g. 0.5 0.75.")
    parser.add_argument("--mined-negatives", type=int, default=0,
                        help="Hard negatives per clicked pair the trainer mines each epoch with the current model.")
    parser.add_argument("--batch-size", type=int, default=Options.batch_size,
                        help=f"Triples per step, for ours and MNRL alike (default {Options.batch_size}).")
    parser.add_argument("--grad-cache-chunk", type=int, default=None,
                        help="Gradient caching: the trainer embeds each step in chunks of N texts (large batches).")
    parser.add_argument("--refit", action="store_true",
                        help="Train the chosen trial's parameters again on the trainer's training + validation "
                        "queries and judge that model (ES_TRAIN_REFIT=true).")
    parser.add_argument("--dev", action="store_true",
                        help="Measure on a dev split of the training queries (results under bench/results/dev/): "
                        "for choosing defaults without looking at the test queries.")
    parser.add_argument("--no-oracle", action="store_true", help="Skip the oracle (fine-tuned on true judgments).")
    parser.add_argument("--no-mnrl", action="store_true",
                        help="Skip the sentence-transformers MNRL reference (recipe screening on --dev runs).")
    parser.add_argument("--add", action="store_true",
                        help="Add these seeds to the result file's runs (same dataset; a seed already there is "
                        "replaced) and summarise them all: seeds run in separate sittings.")
    parser.add_argument("--results", type=Path, default=None,
                        help="Result file (default bench/results/quality-<dataset>.json).")
    parser.add_argument("--no-cache", action="store_true", help="Do not keep the starting model's corpus embeddings.")
    args = parser.parse_args(argv)
    if args.readme:
        print(update_readme())
        return 0
    if not args.dataset:
        parser.error("--dataset is required (or --readme)")
    for problem in _option_problems(args):
        parser.error(problem)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commit = git_commit()
    command = "python -m bench.quality " + " ".join(argv)
    runs: list[dict[str, object]] = []
    kept: list[dict[str, object]] = []  # with --add: the result file's runs of other seeds
    for seed in range(args.seed, args.seed + args.seeds):
        options = Options(max_queries=args.max_queries, trials=args.trials, epochs=args.epochs, seed=seed,
                          sessions_per_query=args.sessions_per_query,
                          max_seq_length=_max_seq_length(args.max_seq_length), model=args.model, lr=args.lr,
                          eta=args.eta, negative_downsampling=args.negative_downsampling,
                          trainer_test_fraction=args.trainer_test_fraction,
                          trainer_validation_fraction=args.trainer_validation_fraction,
                          min_test_queries=args.min_test_queries, wise_ft_alphas=tuple(args.wise_ft),
                          mined_negatives=args.mined_negatives, batch_size=args.batch_size,
                          grad_cache_chunk=args.grad_cache_chunk, refit=args.refit,
                          oracle=not args.no_oracle, mnrl=not args.no_mnrl, dev=args.dev,
                          cache_dir=None if args.no_cache else DEFAULT_CACHE)
        run: dict[str, object] = {"seed": seed, "command": command, "git_commit": commit}
        print(f"seed: {seed}", flush=True)
        for name, value in bench_quality(args.dataset, options):
            if name.endswith("_s") and isinstance(value, float):
                value = round(value, 1)
            run[name] = value
            print(f"{name}: {_format(value)}", flush=True)
        runs.append(run)
        path = args.results or (RESULTS_DIR / "dev" if args.dev else RESULTS_DIR) / f"quality-{runs[0]['dataset']}.json"
        if args.add and not kept:
            kept = earlier_runs(path, str(runs[0]["dataset"]), {int(r["seed"]) for r in runs})
        runs_so_far = sorted(kept + runs, key=lambda r: (r.get("seed") is None, r.get("seed") or 0))
        # Written after every seed: a run stopped in its third hour keeps the seeds it finished.
        written = write_results(path, str(runs[0]["dataset"]), runs_so_far, summarise_seeds(runs_so_far), argv,
                                commit)
    runs = runs_so_far
    for name, value in summarise_seeds(runs).items():
        print(f"{name}: {_format(value)}", flush=True)
    print(f"results: {written}", flush=True)
    return 0


def _option_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the numeric options, before an hour of work is spent on them."""
    problems = [f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}"
                for name, least in (("seeds", 1), ("trials", 1), ("epochs", 1), ("sessions_per_query", 1),
                                    ("min_test_queries", 1), ("batch_size", 1), ("mined_negatives", 0),
                                    ("max_seq_length", 0), ("max_queries", 1), ("grad_cache_chunk", 1))
                if getattr(args, name) is not None and getattr(args, name) < least]
    if args.lr <= 0:
        problems.append(f"--lr must be above 0, got {args.lr}")
    if args.eta < 0:
        problems.append(f"--eta must be >= 0, got {args.eta}")
    if not 0 <= args.negative_downsampling <= 1:
        problems.append(f"--negative-downsampling must be in [0, 1], got {args.negative_downsampling}")
    if not (0 < args.trainer_test_fraction < 1 and 0 <= args.trainer_validation_fraction < 1
            and args.trainer_test_fraction + args.trainer_validation_fraction < 1):
        problems.append("--trainer-test-fraction must be in (0, 1) and --trainer-validation-fraction in [0, 1), "
                        f"with a sum below 1; got {args.trainer_test_fraction} and {args.trainer_validation_fraction}")
    problems += [f"--wise-ft mixes must be in [0, 1], got {alpha}" for alpha in args.wise_ft if not 0 <= alpha <= 1]
    return problems


if __name__ == "__main__":
    sys.exit(main())
