"""One fine-tuning run: one FineTuningParams, the batch's sessions, the starting model → the best model.

Runs on CUDA when there is one and on CPU otherwise. The held-out sessions are chosen by a hash of
their ids, so every run of a search is measured on the same ones, and the starting model is measured
on them first (the baseline a tuned model has to beat). The weights kept are those of the best
validation by the main metric, not the last ones.
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
from trainer.evaluation import HeldOutEvaluator
from trainer.examples import HeldOutSession, SessionExample, build_examples, held_out_session, split_sessions
from trainer.lightning_module import FineTuningModule, ValidationRecord
from trainer.params import FineTuningParams
from trainer.towers import EmbeddingTowers
from trainer.triples import build_triples, relevant_by_query

log = logging.getLogger(__name__)

ItemTexts = Mapping[str, str] | Callable[[list[str]], Mapping[str, str]]
"""Item text by object id: a mapping, or a function from a list of ids to the texts it found."""

__all__ = ["FineTuneCanceled", "FineTuneResult", "ItemTexts", "NotEnoughData", "TrainingSettings", "fine_tune"]


class NotEnoughData(ValueError):
    """The sessions give nothing to train on, or nothing to measure the model with."""


@dataclass(frozen=True)
class TrainingSettings:
    """How a run trains; the names match the plugins' FineTuningSettings, which ``from_settings`` reads."""

    loss: str | tuple[str, ...] = "in_batch_contrastive"
    epochs: int = 3
    batch_size: int = 16  # triples per step
    main_metric: str = "test_ndcg_at_10"
    test_fraction: float = 0.2
    same_query_and_items: bool = True
    seed: int = 13
    eval_every_steps: int | None = None  # None: once per epoch
    warmup_fraction: float = 0.1
    progress_bar: bool = False
    accelerator: str | None = None  # None: "cuda" when available, else "cpu"

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> TrainingSettings:
        values = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        return cls(**{**values, **overrides})

    @property
    def losses(self) -> tuple[str, ...]:
        return (self.loss,) if isinstance(self.loss, str) else tuple(self.loss)


@dataclass
class FineTuneResult:
    params: FineTuningParams
    main_metric: str
    best_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    best_epoch: int
    best_step: int
    history: list[ValidationRecord]
    model_path: Path
    train_sessions: int
    test_sessions: int
    train_triples: int
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
    on_progress: Callable[[int, int, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_validation: Callable[[ValidationRecord], None] | None = None,
) -> FineTuneResult:
    """Train ``base_model`` (a SentenceTransformer folder) on ``sessions`` with ``params``.

    ``on_progress(epoch, epochs, step, steps)`` is called after every training step;
    ``should_stop()`` before every training and validation step, and a True raises FineTuneCanceled;
    ``on_validation(record)`` after every validation (an Optuna pruner raises from there to stop).
    The best model is saved under ``output_dir / "model"`` (safetensors SentenceTransformer folder).
    """
    import lightning as L

    output_dir = Path(output_dir)
    train_sessions, test_sessions = split_sessions(sessions, settings.test_fraction)
    examples = build_examples(
        train_sessions,
        negative_downsampling=params.negative_downsampling,
        not_irrelevant_only=params.not_irrelevant_only,
        seed=settings.seed,
    )
    # Every test session is kept whatever the params, so that all runs are measured on the same set.
    held_out = [held_out_session(s) for s in test_sessions]
    wanted = sorted(
        {i.object_id for e in examples for i in e.positives + e.negatives}
        | {i.object_id for s in held_out for i in s.shown}
    )
    texts = _load_texts(item_texts, wanted)
    missing = [object_id for object_id in wanted if object_id not in texts]
    if missing:
        log.warning("%d item(s) have no text and are left out, e.g. %s", len(missing), missing[:5])
        examples, held_out = _without(examples, held_out, set(missing))

    triples = build_triples(examples)
    if not any(t.positive is not None for t in triples):
        raise NotEnoughData(f"the {len(train_sessions)} training sessions have no clicked results to learn from")
    if not any(s.relevant for s in held_out):
        raise NotEnoughData(
            f"none of the {len(held_out)} held-out sessions has a clicked result; raise test_fraction or send more sessions"
        )

    if settings.seed is not None:
        L.seed_everything(settings.seed, workers=True, verbose=False)
    accelerator = settings.accelerator or ("cuda" if torch.cuda.is_available() else "cpu")
    device = "cuda" if accelerator in ("cuda", "gpu") else "cpu"
    with _quiet_lightning():
        towers = EmbeddingTowers.load(base_model, same_query_and_items=settings.same_query_and_items, device=device)
        towers.freeze_layers(params.num_fixed_layers)

        evaluator = HeldOutEvaluator(held_out, texts)
        evaluator.set_baseline(evaluator.score(towers))
        baseline_metrics = {f"test_{k}": v for k, v in evaluator.metrics(evaluator.baseline).items()}
        if settings.main_metric not in {*baseline_metrics, "train_loss"}:
            raise NotEnoughData(f"main metric {settings.main_metric!r} cannot be computed; have: {sorted(baseline_metrics)}")

        module = FineTuningModule(
            towers,
            params,
            train_triples=triples,
            relevant=relevant_by_query(examples),
            texts=texts,
            evaluator=evaluator,
            losses=settings.losses,
            batch_size=settings.batch_size,
            epochs=settings.epochs,
            warmup_fraction=settings.warmup_fraction,
            seed=settings.seed,
        )
        best = KeepBestWeights(settings.main_metric)
        steps_per_epoch = math.ceil(len(triples) / settings.batch_size)
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            max_epochs=settings.epochs,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=settings.progress_bar,
            num_sanity_val_steps=0,
            reload_dataloaders_every_n_epochs=1,
            val_check_interval=min(settings.eval_every_steps, steps_per_epoch) if settings.eval_every_steps else None,
            callbacks=[best, ProgressAndCancel(settings.epochs, on_progress, should_stop, on_validation)],
            default_root_dir=str(output_dir),
        )
        trainer.fit(module)

        if best.best_state is None:
            raise RuntimeError("training ended without a validation; nothing to keep")
        towers.load_state_dict(best.best_state)
        model_path = towers.save(output_dir / "model")
    best_record = next(r for r in module.history if r.step == best.best_step and r.epoch == best.best_epoch)
    return FineTuneResult(
        params=params,
        main_metric=settings.main_metric,
        best_metrics=dict(best_record.metrics),
        baseline_metrics=baseline_metrics,
        best_epoch=best.best_epoch,
        best_step=best.best_step,
        history=list(module.history),
        model_path=model_path,
        train_sessions=len(train_sessions),
        test_sessions=len(test_sessions),
        train_triples=len(triples),
        missing_items=missing,
    )


def _load_texts(item_texts: ItemTexts, object_ids: list[str]) -> dict[str, str]:
    if isinstance(item_texts, Mapping):
        return {i: item_texts[i] for i in object_ids if i in item_texts}
    found = item_texts(object_ids)
    return {i: found[i] for i in object_ids if i in found}


def _without(
    examples: list[SessionExample], held_out: list[HeldOutSession], missing: set[str]
) -> tuple[list[SessionExample], list[HeldOutSession]]:
    from dataclasses import replace

    kept_examples = [
        replace(
            e,
            positives=tuple(i for i in e.positives if i.object_id not in missing),
            negatives=tuple(i for i in e.negatives if i.object_id not in missing),
        )
        for e in examples
    ]
    kept_held_out = [
        replace(s, shown=tuple(i for i in s.shown if i.object_id not in missing), relevant=s.relevant - missing)
        for s in held_out
    ]
    # A relevant session whose clicked items all lack text has lost the anchor of its negatives.
    kept_examples = [e for e in kept_examples if e.positives or e.is_irrelevant]
    return [e for e in kept_examples if not e.is_empty], [s for s in kept_held_out if s.shown]


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
