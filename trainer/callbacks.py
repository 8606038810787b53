"""Lightning callbacks of a fine-tuning run: keeping the best weights, progress and cancellation."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch

from trainer.ranking_measures import higher_is_better


class FineTuneCanceled(Exception):
    """``should_stop()`` asked the run to stop; raised from inside training, before the next step."""


class KeepBestWeights(L.Callback):
    """After each validation, copy the towers' weights to CPU memory when the monitored metric
    improves, so the run ends with the best validated weights rather than the last ones.

    Kept in memory instead of a Lightning checkpoint: a checkpoint is a pickle holding optimizer
    state too, and only the weights are wanted (saved later as safetensors).
    """

    def __init__(self, monitor: str):
        self.monitor = monitor
        self.maximize = higher_is_better(monitor)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history = getattr(pl_module, "history", None)
        if trainer.sanity_checking or not history:
            return
        record = history[-1]
        value = record.metrics.get(self.monitor)
        if value is None:
            raise KeyError(f"main metric {self.monitor!r} was not computed; have: {', '.join(sorted(record.metrics))}")
        if self.best_value is None or (value > self.best_value if self.maximize else value < self.best_value):
            self.best_value, self.best_epoch, self.best_step = value, record.epoch, record.step
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.towers.state_dict().items()}


class ProgressAndCancel(L.Callback):
    def __init__(
        self,
        epochs: int,
        on_progress: Callable[[int, int, int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_validation: Callable[[object], None] | None = None,
    ):
        self.epochs = epochs
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.on_validation = on_validation

    def _check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise FineTuneCanceled("fine-tuning was canceled")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._check()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after KeepBestWeights (listed first), so a run stopped here still keeps its best weights.
        history = getattr(pl_module, "history", None)
        if self.on_validation is not None and history and not trainer.sanity_checking:
            self.on_validation(history[-1])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.on_progress is not None:
            self.on_progress(trainer.current_epoch, self.epochs, batch_idx + 1, int(trainer.num_training_batches))
