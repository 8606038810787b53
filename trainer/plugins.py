"""What a fine-tuning method (a plugin) is: the reference EmbeddingStudio's ``FineTuningMethod`` contract.

A plugin file under ``ES_PLUGINS_PATH`` defines a subclass with a ``meta`` and two methods:

- ``upload_initial_model()`` puts the starting model into MLflow (``iteration / initial``) through
  ``self.context.tracker.upload_initial_model(folder)``;
- ``get_fine_tuning_builder(clickstream)`` returns everything one fine-tuning task needs for the
  batch's sessions: where item texts come from, the parameter space to search, training settings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from schemas.sessions import StoredSession

if TYPE_CHECKING:
    from schemas.settings import Settings
    from trainer.loaders import ItemLoader
    from trainer.tracking import ExperimentTracker


@dataclass(frozen=True)
class PluginMeta:
    name: str
    version: str = "1.0.0"
    description: str = ""


LossName = str  # a key of trainer.losses.LOSSES, e.g. "in_batch_contrastive"


@dataclass(frozen=True)
class FineTuningSettings:
    """How each trial trains. Losses are named so they survive MLflow params and task metadata."""

    loss: LossName | tuple[LossName, ...] = "in_batch_contrastive"
    epochs: int = 3
    batch_size: int = 16
    grad_cache_chunk: int | None = None  # gradient caching: batches of 64-512 in the memory of one chunk
    trials: int = 4
    main_metric: str = "cm_ndcg_at_10"  # click-model estimate over the shown items; see trainer.evaluation for the others
    test_fraction: float = 0.2  # of the distinct queries: they decide the announcement
    validation_fraction: float = 0.15  # of the distinct queries: they pick epochs, trials, the WiSE-FT mix
    same_query_and_items: bool = True
    seed: int = 13
    wise_ft_alphas: tuple[float, ...] = ()  # e.g. (0.5, 0.75): mixes with the starting weights, kept if better
    early_stopping_patience: int | None = None  # validations without improvement before a trial stops
    refit: bool = False  # train the chosen trial again on training + validation queries before the judgement
    mined_negatives: int = 0  # hard negatives per (query, positive) mined each epoch with the current model
    mining_window: tuple[int, int] = (10, 50)  # the ranks they are drawn from


@dataclass
class FineTuningBuilder:
    clickstream: Sequence[StoredSession]
    item_loader: "ItemLoader"
    initial_params: dict[str, list[Any]]
    fine_tuning_settings: FineTuningSettings = field(default_factory=FineTuningSettings)


@dataclass(frozen=True)
class PluginContext:
    """What the trainer hands a plugin: settings, the MLflow tracker and a scratch folder."""

    settings: "Settings"
    tracker: "ExperimentTracker"
    work_dir: Path


class FineTuningMethod(ABC):
    meta: ClassVar[PluginMeta]

    def __init__(self, context: PluginContext):
        self.context = context

    @abstractmethod
    def upload_initial_model(self) -> None:
        """Store the starting model (once) through ``self.context.tracker``."""

    @abstractmethod
    def get_fine_tuning_builder(self, clickstream: Sequence[StoredSession]) -> FineTuningBuilder:
        """Everything a fine-tuning task needs for these sessions."""
