"""Losses, one class per module (as in sentence-transformers), all with one ``forward(LossBatch)``.

``LOSSES`` maps the names plugins use to the classes; a new loss is a module here and one line below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainer.losses.base import LossBatch, RankingLoss
from trainer.losses.cosine_prob_margin_ranking import CosineProbMarginRankingLoss
from trainer.losses.in_batch_contrastive import InBatchContrastiveLoss
from trainer.losses.prob_margin_ranking import ProbMarginRankingLoss

if TYPE_CHECKING:
    from trainer.params import FineTuningParams

LOSSES: dict[str, type[RankingLoss]] = {
    cls.name: cls for cls in (InBatchContrastiveLoss, ProbMarginRankingLoss, CosineProbMarginRankingLoss)
}


def build_losses(names: Sequence[str], params: FineTuningParams) -> list[RankingLoss]:
    """The losses a run trains with, by name; an unknown name lists the known ones."""
    unknown = [name for name in names if name not in LOSSES]
    if unknown or not names:
        raise ValueError(f"unknown loss(es) {unknown or list(names)}; known: {', '.join(LOSSES)}")
    return [LOSSES[name].from_params(params) for name in names]


__all__ = ["LOSSES", "CosineProbMarginRankingLoss", "InBatchContrastiveLoss", "LossBatch", "ProbMarginRankingLoss",
           "RankingLoss", "build_losses"]
