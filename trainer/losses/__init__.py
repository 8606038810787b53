"""Losses, one class per module (as in sentence-transformers), each with the inputs it needs."""

from trainer.losses.cosine_prob_margin_ranking import CosineProbMarginRankingLoss
from trainer.losses.in_batch_contrastive import InBatchContrastiveLoss
from trainer.losses.prob_margin_ranking import ProbMarginRankingLoss

__all__ = ["CosineProbMarginRankingLoss", "InBatchContrastiveLoss", "ProbMarginRankingLoss"]
