from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.losses.base import LossBatch, RankingLoss


class InBatchContrastiveLoss(RankingLoss):
    """InfoNCE with in-batch negatives (MultipleNegativesRankingLoss-style) plus hard negatives.

    Each query is scored against every candidate of the batch: all rows' positives, then the
    negatives. Cross-entropy with the query's own positive as the class teaches it to rank that
    positive first among them. Scores are cosine similarities times ``scale``. Rows are weighted by
    ``batch.weights`` (a click at a rarely examined position counts more).

    A candidate known to be relevant to a query (the same item as its positive appearing in another
    row, or another item clicked for the same query) is not a negative for it: it is masked out of
    that query's softmax instead of being pushed away.

    With gradient caching (``FineTuningModule(grad_cache_chunk=...)``) the embeddings come from a
    no-grad pass in chunks, so the batch, and with it the number of in-batch negatives, can be far
    larger than what fits in memory at once.

    Args:
        scale: inverse temperature; 20 as in sentence-transformers.
    """

    name = "in_batch_contrastive"

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, batch: LossBatch) -> Tensor:
        candidates = batch.positives
        if batch.negatives.shape[0] > 0:
            candidates = torch.cat([batch.positives, batch.negatives], dim=0)
        scores = self.scale * F.normalize(batch.queries, dim=-1) @ F.normalize(candidates, dim=-1).T
        targets = torch.arange(scores.shape[0], device=scores.device)
        known = batch.known_relevant
        if known is not None and known.numel():
            if known.shape != scores.shape:
                raise ValueError(f"known_relevant is {tuple(known.shape)}, scores are {tuple(scores.shape)}")
            mask = known.to(scores.device).clone()
            mask[targets, targets] = False
            scores = scores.masked_fill(mask, float("-inf"))
        weights = batch.row_weights()
        per_row = F.cross_entropy(scores, targets, reduction="none")
        return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)
