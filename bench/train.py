"""Training speed: our fine-tuning engine against sentence-transformers' own trainer, in one run.

Both engines train the same starting model (all-MiniLM-L6-v2 by default) on the same training
triples, 16 per step, for the same number of steps, on the same device:

- ours: ``trainer.fine_tune.fine_tune`` with the in-batch contrastive loss, one epoch, default
  FineTuningParams, a handful of held-out sessions (evaluation kept minimal);
- sentence-transformers: ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` on an
  (anchor, positive, negative) dataset holding the very triples ``fine_tune`` builds from the same
  sessions (same split, same click model), with no evaluation, no saving and no logging.

The data: emulated sessions (``simulation.emulator``) stored as ``StoredSession``. Only sessions with a
click below a skipped result are kept, so that every triple has a hard negative and the two engines
train on exactly the same (query, positive, negative) rows; training sessions are added until
``steps`` batches of 16 are filled (the last one may be shorter), and ``held_out_sessions`` test
sessions are added for the validation ``fine_tune`` requires.

How the time is taken (model loading, the baseline evaluation, the final validation, saving and each
trainer's set-up are left out of both figures): a step-end hook records the clock after every
training step — ``on_progress`` for ours (called from Lightning's ``on_train_batch_end``), a
``TrainerCallback.on_step_end`` for sentence-transformers, with a CUDA synchronisation first on a
GPU. The window runs from the end of the first step to the end of the last one: the first step
(lazy initialisation, optimizer state allocation) is left out of both, and every step after it is
counted with its batch fetch, tokenisation, forward, backward, clipping and optimizer step. Each
engine runs ``repeats`` times, the engines alternated, and each figure is its engine's fastest run:
on a shared machine other work only ever slows a run down.

Figures:

- ``train_pairs_per_s``: (query, positive) pairs — training triples, each with its hard negative —
  trained per second by ours, over the window (all triples but the first batch's, divided by the
  window);
- ``st_trainer_pairs_per_s``: the same for sentence-transformers' trainer;
- ``train_precision``: ours trains at ``ES_TRAIN_PRECISION`` (bf16 mixed precision where the hardware
  computes bf16); sentence-transformers' trainer at its default, float32;
- ``train_speedup``: the first divided by the second (> 1: ours is faster);
- ``st_trainer_bf16_pairs_per_s`` / ``train_speedup_vs_st_bf16`` (when ours runs bf16): the same
  trainer with ``bf16=True``, the like-for-like comparison;
- ``train_texts_per_step`` / ``st_trainer_texts_per_step``: texts through the transformer per step
  (ours encodes each distinct query, positive and negative of a batch once; MNRL encodes its three
  columns in full), the work behind the rates;
- ``train_wall_s`` / ``st_trainer_wall_s``: each engine's whole call, loading and evaluation included.

Run alone: ``python -m bench.train [--model tiny|minilm|PATH] [--steps N] [--device cpu|cuda]
[--repeats R] [--threads T]``; ``make bench`` runs it with its defaults (``python -m bench.run --only
bench.train:bench_train`` runs only it). sentence-transformers' trainer needs ``datasets`` and
``accelerate``.

Why one module of some 430 lines: both engines' set-up, the same triples and the figures must be
read side by side to see that the comparison is fair.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.sessions import StoredSession

Figure = tuple[str, object]

DEFAULT_STEPS = 40  # MiniLM, idle 2-core CPU: 0.2-0.3 s a step, 6 runs of 40 steps, about 1 min in all
REPEATS = 2
BATCH_SIZE = 16
TEST_FRACTION = 0.05
HELD_OUT_SESSIONS = 4
SEED = 13


def bench_train(
    model: str = "minilm",
    steps: int = DEFAULT_STEPS,
    device: str | None = None,
    repeats: int = REPEATS,
    threads: int | None = None,
    batch_size: int = BATCH_SIZE,
    held_out_sessions: int = HELD_OUT_SESSIONS,
) -> Iterator[Figure]:
    import torch

    if steps < 2:
        raise ValueError("steps must be at least 2: the first step is left out of the timing")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="es-bench-train-") as tmp, _no_progress_bars(), _threads(threads):
        workdir = Path(tmp)
        model_path = _model_path(model, workdir)
        data = bench_data(steps, batch_size, held_out_sessions)
        yield "train_device", device
        yield "train_model", model
        yield "train_steps", data.steps
        yield "train_pairs", len(data.triples)
        yield "train_repeats", repeats
        yield "train_threads", torch.get_num_threads()
        from schemas.settings import Settings
        from trainer.precision import resolved_precision

        precision = resolved_precision(torch.device(device).type, Settings().train_precision)
        yield "train_precision", precision

        ours: list[Timed] = []
        theirs: list[Timed] = []
        theirs_bf16: list[Timed] = []
        for repeat in range(repeats):  # alternated, so that a slow spell of the machine hits all
            ours.append(_time_ours(model_path, data, device, workdir / f"ours{repeat}", precision))
            theirs.append(_time_sentence_transformers(model_path, data, device, workdir / f"st{repeat}"))
            if precision == "bf16":
                theirs_bf16.append(_time_sentence_transformers(model_path, data, device, workdir / f"stbf{repeat}",
                                                               bf16=True))
        best, best_theirs = _best(ours), _best(theirs)
        yield "train_wall_s", best.wall_s
        yield "train_texts_per_step", best.texts_per_step
        yield "train_pairs_per_s", best.pairs_per_s
        yield "st_trainer_wall_s", best_theirs.wall_s
        yield "st_trainer_texts_per_step", best_theirs.texts_per_step
        yield "st_trainer_pairs_per_s", best_theirs.pairs_per_s
        yield "train_speedup", best.pairs_per_s / best_theirs.pairs_per_s
        if theirs_bf16:  # the same trainer told to use bf16 as well: the like-for-like comparison
            best_bf16 = _best(theirs_bf16)
            yield "st_trainer_bf16_pairs_per_s", best_bf16.pairs_per_s
            yield "train_speedup_vs_st_bf16", best.pairs_per_s / best_bf16.pairs_per_s


def _best(runs: list[Timed]) -> Timed:
    """The fastest run: the machine's other work only ever slows a run down."""
    return max(runs, key=lambda t: t.pairs_per_s)


# --- data -------------------------------------------------------------------------------------------


@dataclass
class BenchData:
    sessions: list  # StoredSession: training sessions, then held-out ones
    texts: dict[str, str]  # item text by object id
    triples: list  # trainer.triples.Triple, as fine_tune builds them from ``sessions``
    batch_size: int

    @property
    def steps(self) -> int:
        return math.ceil(len(self.triples) / self.batch_size)

    @property
    def timed_pairs(self) -> int:
        """The pairs of every step but the first (a full batch when there are two steps or more)."""
        return len(self.triples) - min(self.batch_size, len(self.triples))


def bench_data(steps: int, batch_size: int = BATCH_SIZE, held_out_sessions: int = HELD_OUT_SESSIONS) -> BenchData:
    """Emulated sessions giving exactly ``steps`` training batches, plus the held-out sessions."""
    from simulation.emulator import catalog, emulate_sessions
    from trainer.examples import session_example, split_queries

    most = steps * batch_size
    train, test, count = [], [], 0
    for events in emulate_sessions(1_000_000, seed=SEED, session_prefix="bench-train"):
        session = stored_session(events)
        if session.is_irrelevant:
            continue
        example = session_example(session)
        if not example.positives or not example.negatives:
            continue
        # By a hash of the query, as fine_tune splits: these queries only validate.
        held_out = split_queries([session], 0.0, TEST_FRACTION).validation
        if held_out:
            if len(test) < held_out_sessions:
                test.append(session)
        else:
            triples = len(example.positives) * len(example.negatives)
            if count + triples <= most:
                train.append(session)
                count += triples
        if len(test) >= held_out_sessions and count > most - batch_size:
            break
    sessions = train + test
    texts = {item.object_id: item.text for item in catalog()}
    data = BenchData(sessions, texts, _triples_of(sessions), batch_size)
    if data.steps != steps or any(t.positive is None or t.negative is None for t in data.triples):
        raise AssertionError(f"the bench data gives {data.steps} steps, not {steps}, or incomplete triples")
    return data


def stored_session(events: Sequence) -> StoredSession:
    """One emulated session's events as the session store would keep them once it is closed
    (interactions deduplicated by ``event_id``)."""
    from schemas.clickstream import Interaction, MarkIrrelevant, SearchSession, SessionEnd
    from schemas.sessions import StoredSession

    search = events[0]
    assert isinstance(search, SearchSession)
    clicks = {e.event_id: e for e in events if isinstance(e, Interaction)}
    return StoredSession(
        session_id=search.session_id,
        search_query=search.search_query,
        search_meta=search.search_meta,
        search_results=search.search_results,
        user_id=search.user_id,
        created_at=search.created_at,
        events=[
            {"event_id": c.event_id, "object_id": c.object_id, "event_type": c.event_type,
             "created_at": c.created_at, "meta": c.meta}
            for c in clicks.values()
        ],
        is_irrelevant=any(isinstance(e, MarkIrrelevant) for e in events),
        closed_at=events[-1].created_at,
        close_reason="end" if isinstance(events[-1], SessionEnd) else "gap",
        batch_id="bench-train",
    )


def _triples_of(sessions: list) -> list:
    """The training triples fine_tune builds from ``sessions`` with the bench's settings."""
    from trainer.examples import build_examples, split_queries
    from trainer.params import FineTuningParams
    from trainer.triples import build_triples

    params = FineTuningParams()
    train = split_queries(sessions, 0.0, TEST_FRACTION).train
    examples = build_examples(
        train,
        negative_downsampling=params.negative_downsampling,
        not_irrelevant_only=params.not_irrelevant_only,
        seed=SEED,
    )
    return build_triples(examples)


def _model_path(model: str, workdir: Path) -> Path:
    from simulation.tiny_model import build_tiny_model
    from trainer.base_model import minilm_path

    if model == "tiny":
        return build_tiny_model(workdir / "tiny")
    if model == "minilm":
        return minilm_path()
    return Path(model)


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads for the bench (None: torch's default, one per core)."""
    import torch

    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """No loading / saving progress bars from transformers on the bench's output."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


# --- timing -----------------------------------------------------------------------------------------


@dataclass
class Timed:
    pairs_per_s: float
    wall_s: float
    texts_per_step: float


class _StepClock:
    def __init__(self, device: str) -> None:
        self.sync = device.startswith("cuda")
        self.ends: list[float] = []

    def tick(self) -> None:
        if self.sync:
            import torch

            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def pairs_per_s(self, data: BenchData) -> float:
        if len(self.ends) != data.steps:
            raise AssertionError(f"{len(self.ends)} steps timed, {data.steps} expected")
        return data.timed_pairs / (self.ends[-1] - self.ends[0])


class _TextCounter:
    """Counts the texts tokenized, by wrapping a SentenceTransformer's ``preprocess`` (or the
    sentence-transformers data collator's ``preprocess_fn``); ``when`` leaves evaluation out."""

    def __init__(self) -> None:
        self.texts = 0

    def wrap(self, owner, attribute: str = "preprocess", when=lambda: True) -> None:
        original = getattr(owner, attribute)

        def preprocess(inputs, *args, **kwargs):
            if when():
                self.texts += len(inputs)
            return original(inputs, *args, **kwargs)

        setattr(owner, attribute, preprocess)


def _time_ours(model_path: Path, data: BenchData, device: str, output_dir: Path, precision: str) -> Timed:
    from trainer.fine_tune import TrainingSettings, fine_tune
    from trainer.params import FineTuningParams
    from trainer.towers import EmbeddingTowers

    clock = _StepClock(device)
    counter = _TextCounter()
    raw_load = vars(EmbeddingTowers)["load"]

    def load(cls, *args, **kwargs):
        towers = raw_load.__func__(cls, *args, **kwargs)
        for tower in towers.towers():
            counter.wrap(tower, when=lambda tower=tower: tower.training)  # training steps only
        return towers

    def on_progress(epoch: int, epochs: int, step: int, steps: int) -> None:
        clock.tick()

    settings = TrainingSettings(
        loss="in_batch_contrastive", epochs=1, batch_size=data.batch_size, test_fraction=0.0,
        validation_fraction=TEST_FRACTION,
        seed=SEED, accelerator=device, precision=precision,
    )
    started = time.perf_counter()
    EmbeddingTowers.load = classmethod(load)
    try:
        result = fine_tune(model_path, data.sessions, data.texts, FineTuningParams(), output_dir,
                           settings=settings, on_progress=on_progress)
    finally:
        EmbeddingTowers.load = raw_load
    wall = time.perf_counter() - started
    if result.train_triples != len(data.triples):
        raise AssertionError(f"fine_tune trained on {result.train_triples} triples, the bench built {len(data.triples)}")
    return Timed(clock.pairs_per_s(data), wall, counter.texts / data.steps)


def _time_sentence_transformers(model_path: Path, data: BenchData, device: str, output_dir: Path,
                                bf16: bool = False) -> Timed:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.model_card import BaseModelCardCallback
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as transformers_logging

    from trainer.params import FineTuningParams

    clock = _StepClock(device)

    class StepEnds(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    params = FineTuningParams()
    dataset = Dataset.from_dict({
        "anchor": [t.query for t in data.triples],
        "positive": [data.texts[t.positive] for t in data.triples],
        "negative": [data.texts[t.negative] for t in data.triples],
    })
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = SentenceTransformer(str(model_path), device=device)
            args = SentenceTransformerTrainingArguments(
                output_dir=str(output_dir),
                num_train_epochs=1,
                max_steps=data.steps,
                per_device_train_batch_size=data.batch_size,
                learning_rate=params.query_lr,
                weight_decay=params.query_weight_decay,
                warmup_steps=0.1,  # a fraction of the steps, as ours
                max_grad_norm=1.0,
                seed=SEED,
                use_cpu=not device.startswith("cuda"),
                bf16=bf16,
                eval_strategy="no",
                save_strategy="no",
                logging_strategy="no",
                report_to="none",
                disable_tqdm=True,
            )
            with redirect_stderr(io.StringIO()):  # its "Computing widget examples" bar
                trainer = SentenceTransformerTrainer(
                    model=model,
                    args=args,
                    train_dataset=dataset,
                    loss=MultipleNegativesRankingLoss(model),
                    callbacks=[StepEnds()],
                )
            trainer.remove_callback(PrinterCallback)  # the end-of-training metrics dict on stdout
            trainer.remove_callback(BaseModelCardCallback)  # model card data: only for saving
            # What the training batches tokenize (the model card's widget examples are left out).
            counter = _TextCounter()
            counter.wrap(trainer.data_collator, attribute="preprocess_fn")
            trainer.train()
    finally:
        transformers_logging.set_verbosity(verbosity)
    wall = time.perf_counter() - started
    return Timed(clock.pairs_per_s(data), wall, counter.texts / data.steps)


# --- command line -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from bench.run import _format

    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="tiny, minilm, or a SentenceTransformer folder")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps of each engine")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs of each engine, alternated; the best counts")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: one per core; 1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, value in bench_train(args.model, args.steps, args.device, args.repeats, args.threads):
        print(f"{name}: {_format(value)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
