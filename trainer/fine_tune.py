"""One fine-tuning run: one FineTuningParams, the batch's sessions, the starting model → the best model.

Runs on CUDA when there is one and on CPU otherwise. Queries are split by a hash of their normalised
text into train, validation and test (``trainer.examples.split_queries``), so every run of a search is
validated on the same queries and no query is both learned and judged. The weights kept are those of
the best validation by the main metric (then mixed with the starting weights when a WiSE-FT mix
validates better), never chosen by the test queries.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from schemas.sessions import StoredSession
from trainer.callbacks import FineTuneCanceled, KeepBestWeights, ProgressAndCancel
from trainer.evaluation import CatalogEvaluator
from trainer.examples import QuerySplit, SessionExample, build_examples, held_out_queries, split_queries
from trainer.lightning_module import FineTuningModule, ValidationRecord
from trainer.losses import build_losses
from trainer.ranking_measures import higher_is_better
from trainer.params import FineTuningParams
from trainer.towers import EmbeddingTowers
from trainer.triples import build_triples, relevant_by_query

log = logging.getLogger(__name__)

ItemTexts = Mapping[str, str] | Callable[[list[str]], Mapping[str, str]]
"""Item text by object id: a mapping, or a function from a list of ids to the texts it found."""

__all__ = ["FineTuneCanceled", "FineTuneResult", "ItemTexts", "NotEnoughData", "TrainingSettings", "fine_tune",
           "refit", "split_for", "metric_name", "wise_ft"]


class NotEnoughData(ValueError):
    """The sessions give nothing to train on, or nothing to measure the model with."""


@dataclass(frozen=True)
class TrainingSettings:
    """How a run trains; the names match the plugins' FineTuningSettings, which ``from_settings`` reads."""

    loss: str | tuple[str, ...] = "in_batch_contrastive"
    epochs: int = 3
    batch_size: int = 16  # triples per step
    grad_cache_chunk: int | None = None  # embed a step in chunks of this many texts (gradient caching)
    mined_negatives: int = 0  # per (query, positive), mined each epoch from the universe with the current model
    mining_window: tuple[int, int] = (10, 50)  # ranks the mined negatives are drawn from
    main_metric: str = "cm_ndcg_at_10"  # a measure of trainer.evaluation; a "test_" or "val_" prefix is ignored
    test_fraction: float = 0.2  # of the distinct queries
    validation_fraction: float = 0.15  # of the distinct queries
    same_query_and_items: bool = True
    seed: int = 13
    eval_every_steps: int | None = None  # None: once per epoch
    warmup_fraction: float = 0.1
    wise_ft_alphas: tuple[float, ...] = ()  # WiSE-FT mixes tried on validation (1.0, the tuned model, always is)
    early_stopping_patience: int | None = None  # validations without improvement before training stops
    refit: bool = False  # train the chosen trial once more on training + validation queries (``refit``)
    progress_bar: bool = False
    accelerator: str | None = None  # None: "cuda" when available, else "cpu"
    precision: str = "auto"  # of training steps: "fp32", "bf16" (mixed) or "auto" (trainer.precision)
    embed_precision: str = "auto"  # of validation, mining and judgement embeddings

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> TrainingSettings:
        values = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        values = {**values, **overrides}
        for name in ("wise_ft_alphas", "mining_window"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    @property
    def losses(self) -> tuple[str, ...]:
        return (self.loss,) if isinstance(self.loss, str) else tuple(self.loss)

    @property
    def metric(self) -> str:
        """The main metric's measure name, without a side prefix."""
        return metric_name(self.main_metric)

    @property
    def monitor(self) -> str:
        return "val_" + self.metric


def metric_name(main_metric: str) -> str:
    for prefix in ("test_", "val_"):
        if main_metric.startswith(prefix):
            return main_metric[len(prefix):]
    return main_metric


def split_for(sessions: Sequence[StoredSession], settings: TrainingSettings) -> QuerySplit:
    """The batch's train / validation / test queries, the same for every trial and for the judgement."""
    return split_queries(sessions, settings.test_fraction, settings.validation_fraction)


@dataclass
class FineTuneResult:
    params: FineTuningParams
    main_metric: str  # the validation metric that chose the epoch, e.g. "val_ndcg_at_10"
    best_metrics: dict[str, float]  # validation measures of the kept weights
    baseline_metrics: dict[str, float]  # the starting model's, on the same validation queries
    best_epoch: int
    best_step: int
    history: list[ValidationRecord]
    model_path: Path
    train_sessions: int
    validation_queries: int
    train_triples: int
    wise_ft_alpha: float = 1.0
    missing_items: list[str] = field(default_factory=list)

    @property
    def best_value(self) -> float:
        return self.best_metrics[self.main_metric]

    @property
    def baseline_value(self) -> float:
        return self.baseline_metrics[self.main_metric]


def fine_tune(
    base_model: str | Path,
    sessions: Sequence[StoredSession],
    item_texts: ItemTexts,
    params: FineTuningParams,
    output_dir: str | Path,
    *,
    settings: TrainingSettings = TrainingSettings(),
    universe: Sequence[str] | None = None,
    propensity: Callable[[int], float] | None = None,
    on_progress: Callable[[int, int, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_validation: Callable[[ValidationRecord], None] | None = None,
) -> FineTuneResult:
    """Train ``base_model`` (a SentenceTransformer folder) on the training queries of ``sessions``.

    The validation queries pick the epoch (and the WiSE-FT mix); the test queries are not touched
    here: ``trainer.judgement`` measures the kept model on them once, for the announcement.
    ``universe`` lists every item the validation searches over (default: every item the batch showed).
    ``propensity(position)`` weights clicks in training and in the validation relevance (None: all 1).
    ``on_progress(epoch, epochs, step, steps)`` is called after every training step;
    ``should_stop()`` before every training and validation step, and a True raises FineTuneCanceled;
    ``on_validation(record)`` after every validation (an Optuna pruner raises from there to stop).
    The best model is saved under ``output_dir / "model"`` (safetensors SentenceTransformer folder).
    """
    output_dir = Path(output_dir)
    split = split_for(sessions, settings)
    data = _training_data(split.train, sessions, item_texts, params, settings, universe, propensity)
    validation = held_out_queries(split.validation, propensity)
    evaluator = CatalogEvaluator({"validation": validation}, sorted(data.texts), data.texts)
    if evaluator.judged("validation") == 0:
        raise NotEnoughData(
            f"none of the {len(validation)} validation queries has a clicked result; raise validation_fraction "
            "or send more sessions"
        )

    monitor = settings.monitor
    with _quiet_lightning():
        towers = _load_towers(base_model, params, settings)
        start_state = {k: v.detach().to("cpu", copy=True) for k, v in towers.state_dict().items()}

        evaluator.set_baseline(evaluator.embed(towers))
        baseline_metrics = {f"val_{k}": v for k, v in evaluator.metrics(evaluator.baseline, "validation").items()}
        if monitor not in baseline_metrics:
            raise NotEnoughData(f"main metric {settings.metric!r} cannot be computed; have: "
                                f"{sorted(k[4:] for k in baseline_metrics)}")

        module = _module(towers, params, data, settings, settings.epochs, evaluator)
        best = KeepBestWeights(monitor)
        callbacks: list = [best, ProgressAndCancel(settings.epochs, on_progress, should_stop, on_validation)]
        if settings.early_stopping_patience:
            from lightning.pytorch.callbacks import EarlyStopping

            callbacks.append(EarlyStopping(monitor=monitor, mode="max" if higher_is_better(monitor) else "min",
                                           patience=settings.early_stopping_patience, check_on_train_epoch_end=False))
        steps_per_epoch = math.ceil(len(data.triples) / settings.batch_size)  # mining only adds to it
        trainer = _trainer(settings, settings.epochs, callbacks, output_dir,
                           val_check_interval=min(settings.eval_every_steps, steps_per_epoch)
                           if settings.eval_every_steps else None)
        trainer.fit(module)

        if best.best_state is None:
            raise RuntimeError("training ended without a validation; nothing to keep")
        best_record = next(r for r in module.history if r.step == best.best_step and r.epoch == best.best_epoch)
        best_metrics = dict(best_record.metrics)
        alpha, state = 1.0, best.best_state
        for candidate in sorted(set(settings.wise_ft_alphas) - {1.0}):
            mixed = wise_ft(start_state, best.best_state, candidate)
            towers.load_state_dict(mixed)
            measured = {f"val_{k}": v for k, v in evaluator.metrics(evaluator.embed(towers), "validation").items()}
            log.info("WiSE-FT alpha %.2f: %s %.4f", candidate, monitor, measured[monitor])
            if _better(measured[monitor], best_metrics[monitor], monitor):
                alpha, state, best_metrics = candidate, mixed, {**best_metrics, **measured}
        towers.load_state_dict(state)
        model_path = towers.save(output_dir / "model")
    best_metrics["wise_ft_alpha"] = alpha
    return FineTuneResult(
        params=params,
        main_metric=monitor,
        best_metrics=best_metrics,
        baseline_metrics=baseline_metrics,
        best_epoch=best.best_epoch,
        best_step=best.best_step,
        history=list(module.history),
        model_path=model_path,
        train_sessions=len(split.train),
        validation_queries=evaluator.judged("validation"),
        train_triples=len(data.triples),
        wise_ft_alpha=alpha,
        missing_items=data.missing,
    )


@dataclass(frozen=True)
class RefitResult:
    model_path: Path
    train_sessions: int
    train_triples: int
    epochs: int
    wise_ft_alpha: float


def refit(
    base_model: str | Path,
    sessions: Sequence[StoredSession],
    item_texts: ItemTexts,
    params: FineTuningParams,
    output_dir: str | Path,
    *,
    epochs: int,
    wise_ft_alpha: float = 1.0,
    settings: TrainingSettings = TrainingSettings(),
    universe: Sequence[str] | None = None,
    propensity: Callable[[int], float] | None = None,
    on_progress: Callable[[int, int, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RefitResult:
    """Train the parameters a search chose once more, on the training and the validation queries together.

    The search holds out the validation queries to choose the trial, its epoch and its WiSE-FT mix;
    once those are chosen the validation queries have nothing left to decide, and a model that
    learns from them too learns from more of the batch (with the bench's fractions, 70% of the
    queries instead of 55%). The refit runs the chosen number of whole epochs (a mid-epoch choice is
    rounded up: its learning-rate schedule spans whole epochs) and keeps the last weights, mixed with
    the starting weights by the chosen alpha. The test queries are still untouched: they judge the
    refit model, and nothing chose it by them.
    """
    output_dir = Path(output_dir)
    split = split_for(sessions, settings)
    learned = [*split.train, *split.validation]
    data = _training_data(learned, sessions, item_texts, params, settings, universe, propensity)
    with _quiet_lightning():
        towers = _load_towers(base_model, params, settings)
        start_state = {k: v.detach().to("cpu", copy=True) for k, v in towers.state_dict().items()}
        module = _module(towers, params, data, settings, epochs, evaluator=None)
        trainer = _trainer(settings, epochs, [ProgressAndCancel(epochs, on_progress, should_stop)],
                           output_dir, limit_val_batches=0)
        trainer.fit(module)
        if wise_ft_alpha != 1.0:
            towers.load_state_dict(wise_ft(start_state, towers.state_dict(), wise_ft_alpha))
        model_path = towers.save(output_dir / "model")
    return RefitResult(model_path, len(learned), len(data.triples), epochs, wise_ft_alpha)


@dataclass(frozen=True)
class _TrainingData:
    examples: list[SessionExample]
    triples: list
    texts: dict[str, str]
    missing: list[str]


def _training_data(learned: Sequence[StoredSession], sessions: Sequence[StoredSession], item_texts: ItemTexts,
                   params: FineTuningParams, settings: TrainingSettings, universe: Sequence[str] | None,
                   propensity: Callable[[int], float] | None) -> _TrainingData:
    """The examples and triples of the ``learned`` sessions, and the texts of every item searched over."""
    examples = build_examples(
        learned,
        negative_downsampling=params.negative_downsampling,
        not_irrelevant_only=params.not_irrelevant_only,
        seed=settings.seed,
    )
    shown = {r.object_id for s in sessions for r in s.search_results}
    wanted = sorted(set(universe or ()) | shown)
    texts = _load_texts(item_texts, wanted)
    missing = [object_id for object_id in wanted if object_id in shown and object_id not in texts]
    if missing:
        log.warning("%d item(s) have no text and are left out, e.g. %s", len(missing), missing[:5])
        examples = _without(examples, set(missing))
    triples = build_triples(examples, propensity)
    if not any(t.positive is not None for t in triples):
        raise NotEnoughData(f"the {len(learned)} training sessions have no clicked results to learn from")
    return _TrainingData(examples, triples, texts, missing)


def _load_towers(base_model: str | Path, params: FineTuningParams, settings: TrainingSettings) -> EmbeddingTowers:
    import lightning as L

    if settings.seed is not None:
        L.seed_everything(settings.seed, workers=True, verbose=False)
    accelerator = _accelerator(settings)
    device = "cuda" if accelerator in ("cuda", "gpu") else "cpu"
    towers = EmbeddingTowers.load(base_model, same_query_and_items=settings.same_query_and_items, device=device,
                                  embed_precision=settings.embed_precision, train_precision=settings.precision)
    towers.freeze_layers(params.num_fixed_layers)
    return towers


def _accelerator(settings: TrainingSettings) -> str:
    return settings.accelerator or ("cuda" if torch.cuda.is_available() else "cpu")


def _module(towers: EmbeddingTowers, params: FineTuningParams, data: _TrainingData, settings: TrainingSettings,
            epochs: int, evaluator: CatalogEvaluator | None) -> FineTuningModule:
    return FineTuningModule(
        towers,
        params,
        train_triples=data.triples,
        relevant=relevant_by_query(data.examples),
        texts=data.texts,
        evaluator=evaluator,
        losses=build_losses(settings.losses, params),
        batch_size=settings.batch_size,
        grad_cache_chunk=settings.grad_cache_chunk,
        mined_negatives=settings.mined_negatives,
        mining_window=tuple(settings.mining_window),
        epochs=epochs,
        warmup_fraction=settings.warmup_fraction,
        seed=settings.seed,
    )


def _trainer(settings: TrainingSettings, epochs: int, callbacks: list, output_dir: Path, **options: Any):
    import lightning as L

    return L.Trainer(
        accelerator=_accelerator(settings),
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=settings.progress_bar,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1,
        callbacks=callbacks,
        default_root_dir=str(output_dir),
        **options,
    )


def wise_ft(start: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Weight-space ensemble ``(1 − alpha)·start + alpha·tuned`` (WiSE-FT); integer buffers are the tuned ones."""
    return {name: (1.0 - alpha) * start[name] + alpha * value if value.is_floating_point() else value
            for name, value in tuned.items()}


def _better(value: float, than: float, metric: str) -> bool:
    return value > than if higher_is_better(metric) else value < than


def _load_texts(item_texts: ItemTexts, object_ids: list[str]) -> dict[str, str]:
    if isinstance(item_texts, Mapping):
        return {i: item_texts[i] for i in object_ids if i in item_texts}
    found = item_texts(object_ids)
    return {i: found[i] for i in object_ids if i in found}


def _without(examples: list[SessionExample], missing: set[str]) -> list[SessionExample]:
    from dataclasses import replace

    kept = [
        replace(
            e,
            positives=tuple(i for i in e.positives if i.object_id not in missing),
            negatives=tuple(i for i in e.negatives if i.object_id not in missing),
        )
        for e in examples
    ]
    # A relevant session whose clicked items all lack text has lost the anchor of its negatives.
    kept = [e for e in kept if e.positives or e.is_irrelevant]
    return [e for e in kept if not e.is_empty]


class _quiet_lightning:
    """Silence Lightning's start-up banners and advice for the duration of a fit."""

    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning")

    def __enter__(self) -> None:
        from transformers.utils import logging as transformers_logging

        # Loading and saving print a progress bar per file; a run reports its own progress.
        self._bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        self._levels = {name: logging.getLogger(name).level for name in self.names}
        for name in self.names:
            logging.getLogger(name).setLevel(logging.WARNING)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*number of training batches.*smaller than the logging interval.*")

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as transformers_logging

        if self._bars:
            transformers_logging.enable_progress_bar()
        self._warnings.__exit__(*exc)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
