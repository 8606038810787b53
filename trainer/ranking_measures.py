"""Quality measures of a model on held-out sessions; pure functions of scores and labels.

Retrieval metrics rerank each session's shown results by the model's cosine to the query, with the
clicked results as the relevant ones, and average over sessions that have any (a session marked
irrelevant, or one without clicks, has no right answer to rank). Ties keep the engine's order.

DistanceShift is the reference EmbeddingStudio's measure, relative to the starting model: how much closer the clicked
results of relevant sessions came to their query, and how much farther the shown results of sessions
marked irrelevant went. It says nothing about the rest of the ranking, hence the retrieval metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

K = 10


def ndcg_at_k(ranked_relevance: Sequence[float], k: int = K) -> float:
    """nDCG of a ranking, given the relevance of each result in ranked order (gain = relevance)."""
    ideal = sorted(ranked_relevance, reverse=True)
    ideal_dcg = dcg(ideal[:k])
    return dcg(ranked_relevance[:k]) / ideal_dcg if ideal_dcg > 0 else 0.0


def recall_at_k(ranked_relevance: Sequence[float], k: int = K) -> float:
    """Share of the relevant results that are in the top k."""
    total = sum(1 for rel in ranked_relevance if rel > 0)
    return sum(1 for rel in ranked_relevance[:k] if rel > 0) / total if total else 0.0


def reciprocal_rank(ranked_relevance: Sequence[float]) -> float:
    for position, rel in enumerate(ranked_relevance, start=1):
        if rel > 0:
            return 1.0 / position
    return 0.0


def rerank(scores: Sequence[float], relevance: Sequence[float]) -> list[float]:
    """Relevance in the order of decreasing score; a stable sort keeps the engine's order on ties."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [relevance[i] for i in order]


def dcg(relevance: Sequence[float]) -> float:
    """Discounted cumulative gain of relevance in ranked order (log2 discount)."""
    return sum(rel / math.log2(position + 2) for position, rel in enumerate(relevance))


@dataclass(frozen=True)
class ScoredSession:
    """One held-out session's shown results (in the engine's order) with their scores."""

    relevance: Sequence[float]  # 1 for clicked, 0 otherwise; all 0 for a session marked irrelevant
    scores: Sequence[float]  # the model being measured
    baseline_scores: Sequence[float]  # the starting model
    is_irrelevant: bool


def retrieval_metrics(sessions: Iterable[ScoredSession], k: int = K) -> dict[str, float]:
    per_session = [
        (ndcg_at_k(ranked, k), recall_at_k(ranked, k), reciprocal_rank(ranked))
        for ranked in (rerank(s.scores, s.relevance) for s in sessions if not s.is_irrelevant and any(s.relevance))
    ]
    if not per_session:
        return {}
    n = len(per_session)
    return {
        f"ndcg_at_{k}": sum(v[0] for v in per_session) / n,
        f"recall_at_{k}": sum(v[1] for v in per_session) / n,
        "mrr": sum(v[2] for v in per_session) / n,
    }


def session_distance_shift(session: ScoredSession) -> float | None:
    """Mean change of the relevant results' scores (up is good), or for a session marked irrelevant
    the mean drop of all shown results' scores (down is good); None when neither applies."""
    if session.is_irrelevant:
        indices = range(len(session.scores))
        sign = -1.0
    else:
        indices = [i for i, rel in enumerate(session.relevance) if rel > 0]
        sign = 1.0
    if not indices:
        return None
    return sign * sum(session.scores[i] - session.baseline_scores[i] for i in indices) / len(indices)


def distance_shift(sessions: Iterable[ScoredSession]) -> dict[str, float]:
    shifts: dict[bool, list[float]] = {False: [], True: []}
    for session in sessions:
        shift = session_distance_shift(session)
        if shift is not None:
            shifts[session.is_irrelevant].append(shift)
    result = {}
    if shifts[False]:
        result["not_irrelevant_dist_shift"] = sum(shifts[False]) / len(shifts[False])
    if shifts[True]:
        result["irrelevant_dist_shift"] = sum(shifts[True]) / len(shifts[True])
    return result


def evaluate_sessions(sessions: Sequence[ScoredSession], k: int = K) -> dict[str, float]:
    """All held-out metrics, unprefixed (the caller adds ``test_``)."""
    return {**retrieval_metrics(sessions, k), **distance_shift(sessions)}


def higher_is_better(metric: str) -> bool:
    return not metric.endswith("loss")
