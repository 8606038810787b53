from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InBatchContrastiveLoss(nn.Module):
    """InfoNCE with in-batch negatives (MultipleNegativesRankingLoss-style) plus hard negatives.

    Each query is scored against every candidate of the batch: all rows' positives, then the hard
    negatives. Cross-entropy with the query's own positive as the class teaches it to rank that
    positive first among them. Scores are cosine similarities times ``scale``.

    A candidate known to be relevant to a query (the same item as its positive appearing in another
    row, or another item clicked for the same query) is not a negative for it: it is masked out of
    that query's softmax instead of being pushed away.

    Args:
        scale: inverse temperature; 20 as in sentence-transformers.
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(
        self,
        query_embeddings: Tensor,
        positive_embeddings: Tensor,
        negative_embeddings: Tensor | None = None,
        known_relevant: Tensor | None = None,
    ) -> Tensor:
        """
        Inputs:
            query_embeddings: ``[B, D]``.
            positive_embeddings: ``[B, D]``, row i is query i's positive.
            negative_embeddings: ``[M, D]`` hard negatives shared by the batch, or None.
            known_relevant: bool ``[B, B + M]``, True where candidate j is known relevant to query i;
                the diagonal (each query's own positive) is always kept.
        Returns:
            the mean cross-entropy over the B queries.
        """
        candidates = positive_embeddings
        if negative_embeddings is not None and negative_embeddings.shape[0] > 0:
            candidates = torch.cat([positive_embeddings, negative_embeddings], dim=0)
        scores = self.scale * F.normalize(query_embeddings, dim=-1) @ F.normalize(candidates, dim=-1).T
        targets = torch.arange(scores.shape[0], device=scores.device)
        if known_relevant is not None:
            if known_relevant.shape != scores.shape:
                raise ValueError(f"known_relevant is {tuple(known_relevant.shape)}, scores are {tuple(scores.shape)}")
            mask = known_relevant.to(scores.device).clone()
            mask[targets, targets] = False
            scores = scores.masked_fill(mask, float("-inf"))
        return F.cross_entropy(scores, targets)
