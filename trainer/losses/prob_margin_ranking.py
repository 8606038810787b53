from __future__ import annotations

import torch
from torch import Tensor, nn


class ProbMarginRankingLoss(nn.Module):
    """A smooth margin-ranking loss over (positive, negative) score pairs, weighted by confidence.

    For each pair, with target ``t`` (+1 when scores are similarities, -1 when they are distances):

        a = -t · (s⁺ − s⁻) + margin
        loss = mean( activation(a) · min(c⁺, c⁻) )

    With the plain sigmoid as activation this is a soft hinge: it goes to 0 once the positive leads
    the negative by well over the margin, and to the confidence once the order is badly wrong.

    Pairs whose ``|s⁺ − s⁻|`` lies outside ``[min_abs_difference, max_abs_difference]`` are left out
    (measured on the current scores, without gradient): near-ties are often label noise and huge gaps
    are either solved or hopeless.

    Args:
        margin: the lead a positive should have over a negative.
        min_abs_difference, max_abs_difference: the pair filter; the defaults keep almost everything.
        is_similarity: True for similarity scores (higher is closer), False for distances.
    """

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

    def activation(self, a: Tensor) -> Tensor:
        """Maps the margin violation ``a`` to a per-pair penalty; subclasses reshape it."""
        return torch.sigmoid(a)

    def forward(
        self,
        positive_scores: Tensor,
        negative_scores: Tensor,
        positive_confidences: Tensor | None = None,
        negative_confidences: Tensor | None = None,
    ) -> Tensor:
        """
        Inputs:
            positive_scores, negative_scores: ``[P]``, the query's score with the pair's positive and
                negative item.
            positive_confidences, negative_confidences: ``[P]`` in [0, 1], how sure we are of each
                label; ones when not given.
        Returns:
            a scalar; zero (still attached to the graph) when the filter leaves no pair.
        """
        if positive_scores.shape != negative_scores.shape:
            raise ValueError(f"scores differ in shape: {tuple(positive_scores.shape)} vs {tuple(negative_scores.shape)}")
        confidence = torch.ones_like(positive_scores)
        if positive_confidences is not None:
            confidence = torch.minimum(confidence, positive_confidences)
        if negative_confidences is not None:
            confidence = torch.minimum(confidence, negative_confidences)
        difference = positive_scores - negative_scores
        gap = difference.detach().abs()
        kept = (gap >= self.min_abs_difference) & (gap <= self.max_abs_difference)
        if not bool(kept.any()):
            return difference.sum() * 0.0
        violation = -self.target * difference[kept] + self.margin
        return (self.activation(violation) * confidence[kept]).mean()
