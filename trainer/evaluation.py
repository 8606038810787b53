"""Scoring held-out sessions with a model, for the metrics in ``trainer.metrics``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from trainer.examples import HeldOutSession
from trainer.metrics import ScoredSession, evaluate_sessions
from trainer.towers import EmbeddingTowers


class HeldOutEvaluator:
    """Scores each held-out session's shown results by cosine to its query.

    ``baseline`` holds the starting model's scores, against which DistanceShift is measured; set it
    once, before training, with ``set_baseline(evaluator.score(towers))``.
    """

    def __init__(self, sessions: Sequence[HeldOutSession], texts: Mapping[str, str], batch_size: int = 64):
        self.sessions = list(sessions)
        self.texts = texts
        self.batch_size = batch_size
        self.baseline: list[list[float]] | None = None

    def __len__(self) -> int:
        return len(self.sessions)

    def score(self, towers: EmbeddingTowers, indices: Sequence[int] | None = None) -> list[list[float]]:
        chosen = [self.sessions[i] for i in (range(len(self.sessions)) if indices is None else indices)]
        if not chosen:
            return []
        queries = sorted({s.query for s in chosen})
        items = sorted({item.object_id for s in chosen for item in s.shown})
        query_vectors = dict(zip(queries, towers.embed_queries(queries, self.batch_size)))
        item_vectors = dict(zip(items, towers.embed_items([self.texts[i] for i in items], self.batch_size)))
        scores = []
        for session in chosen:
            shown = torch.stack([item_vectors[item.object_id] for item in session.shown])
            scores.append(torch.nn.functional.cosine_similarity(shown, query_vectors[session.query][None, :]).tolist())
        return scores

    def set_baseline(self, scores: list[list[float]]) -> None:
        self.baseline = scores

    def metrics(self, scores: Sequence[Sequence[float]]) -> dict[str, float]:
        if self.baseline is None:
            raise RuntimeError("set the starting model's scores with set_baseline() first")
        scored = [
            ScoredSession(
                relevance=[1.0 if item.object_id in session.relevant else 0.0 for item in session.shown],
                scores=current,
                baseline_scores=baseline,
                is_irrelevant=session.is_irrelevant,
            )
            for session, current, baseline in zip(self.sessions, scores, self.baseline, strict=True)
        ]
        return evaluate_sessions(scored)
