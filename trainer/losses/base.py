"""The one shape every loss has: a ``RankingLoss`` takes a ``LossBatch`` through ``forward``.

The batch holds the embeddings of one training step (see ``trainer.triples.TripleBatch`` for how rows
and candidates are built) and what is known about them; each loss reads the parts it needs. A loss is
built from the run's parameters by ``from_params`` so that a new loss is one module and one line in
``trainer.losses.LOSSES``, and nothing else in the trainer knows its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from trainer.params import FineTuningParams


@dataclass
class LossBatch:
    """One step's embeddings and labels.

    queries: ``[B, D]``, one row per distinct (query, positive) pair.
    positives: ``[B, D]``, row i is query i's clicked item.
    negatives: ``[M, D]``, the step's distinct negatives (skipped, mined or of irrelevant sessions).
    known_relevant: bool ``[B, B + M]``, True where a candidate (positives, then negatives) is known to
        be relevant to the row's query; such a candidate is never pushed away from it.
    margin_pairs: long ``[P, 2]``, (row, negative) pairs a margin loss compares.
    weights: ``[B]`` per-row weight (inverse examination propensity of the click), or None for ones.
    """

    queries: Tensor
    positives: Tensor
    negatives: Tensor
    known_relevant: Tensor
    margin_pairs: Tensor
    weights: Tensor | None = None

    def __len__(self) -> int:
        return self.queries.shape[0]

    def positive_scores(self) -> Tensor:
        return F.cosine_similarity(self.queries, self.positives)

    def row_weights(self) -> Tensor:
        if self.weights is None:
            return torch.ones(len(self), device=self.queries.device)
        return self.weights.to(self.queries.device)


class RankingLoss(nn.Module, ABC):
    """A loss over a ``LossBatch``; ``name`` is how plugins and MLflow params refer to it."""

    name: ClassVar[str]

    @classmethod
    def from_params(cls, params: FineTuningParams) -> RankingLoss:
        return cls()

    @abstractmethod
    def forward(self, batch: LossBatch) -> Tensor:
        """A scalar, attached to the graph (zero when the batch gives this loss nothing to do)."""
