from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.losses.base import LossBatch, RankingLoss

if TYPE_CHECKING:
    from trainer.params import FineTuningParams


class ProbMarginRankingLoss(RankingLoss):
    """A smooth margin-ranking loss over the batch's (positive, negative) pairs, weighted by confidence.

    For each pair, with target ``t`` (+1 when scores are similarities, -1 when they are distances):

        a = -t · (s⁺ − s⁻) + margin
        loss = mean( activation(a) · confidence )

    With the plain sigmoid as activation this is a soft hinge: it goes to 0 once the positive leads
    the negative by well over the margin, and to the confidence once the order is badly wrong. The
    confidence of a pair is its row's weight (``batch.weights``, ones when absent).

    Pairs whose ``|s⁺ − s⁻|`` lies outside ``[min_abs_difference, max_abs_difference]`` are left out
    (measured on the current scores, without gradient): near-ties are often label noise and huge gaps
    are either solved or hopeless.

    Args:
        margin: the lead a positive should have over a negative.
        min_abs_difference, max_abs_difference: the pair filter; the defaults keep almost everything.
        is_similarity: True for similarity scores (higher is closer), False for distances.
    """

    name = "prob_margin"

    def __init__(
        self,
        margin: float = 0.1,
        min_abs_difference: float = 0.0,
        max_abs_difference: float = 2.0,
        is_similarity: bool = True,
    ):
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        if not 0 <= min_abs_difference < max_abs_difference:
            raise ValueError("need 0 <= min_abs_difference < max_abs_difference")
        self.margin = margin
        self.min_abs_difference = min_abs_difference
        self.max_abs_difference = max_abs_difference
        self.target = 1.0 if is_similarity else -1.0

    @classmethod
    def from_params(cls, params: FineTuningParams) -> ProbMarginRankingLoss:
        return cls(margin=params.margin, min_abs_difference=params.min_abs_difference_threshold,
                   max_abs_difference=params.max_abs_difference_threshold)

    def activation(self, a: Tensor) -> Tensor:
        """Maps the margin violation ``a`` to a per-pair penalty; subclasses reshape it."""
        return torch.sigmoid(a)

    def forward(self, batch: LossBatch) -> Tensor:
        if batch.margin_pairs.numel() == 0:
            return batch.queries.sum() * 0.0
        rows = batch.margin_pairs[:, 0].to(batch.queries.device)
        columns = batch.margin_pairs[:, 1].to(batch.queries.device)
        positive = F.cosine_similarity(batch.queries[rows], batch.positives[rows])
        negative = F.cosine_similarity(batch.queries[rows], batch.negatives[columns])
        return self.pair_loss(positive, negative, batch.row_weights()[rows])

    def pair_loss(self, positive_scores: Tensor, negative_scores: Tensor, confidences: Tensor | None = None) -> Tensor:
        """The loss of ``[P]`` pair scores with ``[P]`` confidences in [0, 1] (ones when not given);
        zero, still attached to the graph, when the filter leaves no pair."""
        if positive_scores.shape != negative_scores.shape:
            raise ValueError(f"scores differ in shape: {tuple(positive_scores.shape)} vs {tuple(negative_scores.shape)}")
        confidence = torch.ones_like(positive_scores) if confidences is None else confidences
        difference = positive_scores - negative_scores
        gap = difference.detach().abs()
        kept = (gap >= self.min_abs_difference) & (gap <= self.max_abs_difference)
        if not bool(kept.any()):
            return difference.sum() * 0.0
        violation = -self.target * difference[kept] + self.margin
        return (self.activation(violation) * confidence[kept]).mean()
