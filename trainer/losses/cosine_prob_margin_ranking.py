from __future__ import annotations

import torch
from torch import Tensor

from trainer.losses.prob_margin_ranking import ProbMarginRankingLoss


class CosineProbMarginRankingLoss(ProbMarginRankingLoss):
    """ProbMarginRankingLoss with the sharp sigmoid ``σ(400·a − 6)`` meant for cosine scores.

    Cosine gaps between a clicked and a skipped result are often a few hundredths; the plain sigmoid
    is almost flat there. This one is ~0 while the margin holds (σ(−6) ≈ 0.0025 at a = 0) and reaches
    0.5 once the pair violates it by 0.015, so small wrong orders are penalised in earnest.

    (In the reference EmbeddingStudio this override was dead: the base class called a name-mangled
    ``__adjust`` that a subclass cannot replace. Here the base calls the public ``activation``.)
    """

    name = "cosine_prob_margin"
    steepness: float = 400.0
    offset: float = 6.0

    def activation(self, a: Tensor) -> Tensor:
        return torch.sigmoid(self.steepness * a - self.offset)
