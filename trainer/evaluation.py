"""Judging a model on held-out queries over the whole item universe, for epoch, trial and announcement.

Each held-out query (its sessions grouped by normalised text, see ``trainer.examples``) is searched
over every item the task knows: all items shown anywhere in the batch, plus the whole catalog when
the item loader can list it. The main measures are what a search product sees:

- ``ndcg_at_10``, ``recall_at_10``, ``recall_at_100``, ``mrr`` over the universe, with the query's
  clicked items (weighted by inverse examination propensity) as the relevant ones;

and, secondary, what the seeds measured:

- ``rerank_ndcg_at_10``, ``rerank_recall_at_10``, ``rerank_mrr``: each session's shown results reranked;
- ``not_irrelevant_dist_shift`` / ``irrelevant_dist_shift`` (the reference EmbeddingStudio's
  DistanceShift), relative to the starting model.

Every measure is computed per query first (the unit the announcement gate resamples), then averaged
over the queries that have it. Any of them can be the main metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from trainer.examples import HeldOutQuery
from trainer.metrics import ScoredSession, distance_shift, ndcg_at_k, recall_at_k, reciprocal_rank, retrieval_metrics
from trainer.towers import EmbeddingTowers

DEEP_K = 100
PerQuery = dict[str, dict[str, float]]
"""Normalised query → {measure → value}."""


@dataclass
class Snapshot:
    """One model's normalised embeddings of the held-out queries and the item universe."""

    query_vectors: torch.Tensor  # [queries, dim], in the evaluator's query order
    item_vectors: torch.Tensor  # [universe, dim], in the evaluator's universe order


class CatalogEvaluator:
    """Held-out queries (each on a side: ``validation`` or ``test``) against an item universe.

    ``baseline`` is the starting model's snapshot, against which DistanceShift is measured; set it
    once, before training, with ``set_baseline(evaluator.embed(towers))``.
    """

    def __init__(self, queries: Mapping[str, Sequence[HeldOutQuery]], universe: Sequence[str],
                 texts: Mapping[str, str], *, batch_size: int = 64, k: int = 10, deep_k: int = DEEP_K):
        self.sides = {side: [q.key for q in found] for side, found in queries.items()}
        self.queries = [q for found in queries.values() for q in found]
        shown = {item.object_id for q in self.queries for s in q.sessions for item in s.shown}
        self.universe = sorted(i for i in set(universe) | shown if i in texts)
        self.position = {object_id: index for index, object_id in enumerate(self.universe)}
        self.texts = texts
        self.batch_size = batch_size
        self.k = k
        self.deep_k = deep_k
        self.baseline: Snapshot | None = None

    def judged(self, side: str) -> int:
        """How many of a side's queries have a clicked item to find."""
        keys = set(self.sides.get(side, ()))
        return sum(1 for q in self.queries if q.key in keys and q.gains)

    def embed(self, towers: EmbeddingTowers) -> Snapshot:
        queries = towers.embed_queries([q.text for q in self.queries], self.batch_size) if self.queries else torch.empty(0)
        items = towers.embed_items([self.texts[i] for i in self.universe], self.batch_size)
        return Snapshot(_normalised(queries), _normalised(items))

    def set_baseline(self, snapshot: Snapshot) -> None:
        self.baseline = snapshot

    # --- measures -----------------------------------------------------------------------------------
    def per_query(self, snapshot: Snapshot, side: str | None = None) -> PerQuery:
        keys = set(self.sides.get(side, ())) if side is not None else None
        chosen = [(row, q) for row, q in enumerate(self.queries) if keys is None or q.key in keys]
        found: PerQuery = {}
        if not chosen or not self.universe:
            return found
        rows = torch.tensor([row for row, _ in chosen])
        scores = snapshot.query_vectors[rows] @ snapshot.item_vectors.T
        depth = min(max(self.deep_k, self.k), len(self.universe))
        top = torch.topk(scores, depth, dim=1).indices.tolist()
        for (row, query), ranked in zip(chosen, top):
            measures = self._catalog_measures(query, [self.universe[i] for i in ranked])
            measures.update(self._session_measures(query, snapshot, row))
            found[query.key] = measures
        return found

    def metrics(self, snapshot: Snapshot, side: str | None = None) -> dict[str, float]:
        """Each measure averaged over the side's queries that have it."""
        return mean_of(self.per_query(snapshot, side))

    def _catalog_measures(self, query: HeldOutQuery, ranked: list[str]) -> dict[str, float]:
        gains = {i: g for i, g in query.gains.items() if g > 0 and i in self.position}
        if not gains:
            return {}
        ranked_gains = [gains.get(i, 0.0) for i in ranked]
        # The relevant items the search missed are appended, so that the ideal ranking and the
        # recall's denominator see every one of them.
        seen = set(ranked)
        ranked_gains += [g for i, g in gains.items() if i not in seen]
        return {
            f"ndcg_at_{self.k}": ndcg_at_k(ranked_gains, self.k),
            f"recall_at_{self.k}": recall_at_k(ranked_gains, self.k),
            f"recall_at_{self.deep_k}": recall_at_k(ranked_gains, self.deep_k),
            "mrr": reciprocal_rank(ranked_gains[: len(ranked)]),
        }

    def _session_measures(self, query: HeldOutQuery, snapshot: Snapshot, row: int) -> dict[str, float]:
        scored = []
        for session in query.sessions:
            shown = [item for item in session.shown if item.object_id in self.position]
            if not shown:
                continue
            index = torch.tensor([self.position[item.object_id] for item in shown])
            current = (snapshot.item_vectors[index] @ snapshot.query_vectors[row]).tolist()
            baseline = (self.baseline.item_vectors[index] @ self.baseline.query_vectors[row]).tolist() \
                if self.baseline is not None else current
            scored.append(ScoredSession(
                relevance=[1.0 if item.object_id in session.relevant else 0.0 for item in shown],
                scores=current, baseline_scores=baseline, is_irrelevant=session.is_irrelevant,
            ))
        measures = {f"rerank_{name}": value for name, value in retrieval_metrics(scored, self.k).items()}
        if self.baseline is not None:
            measures.update(distance_shift(scored))
        return measures


def mean_of(per_query: PerQuery) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    for measures in per_query.values():
        for name, value in measures.items():
            totals.setdefault(name, []).append(value)
    return {name: sum(values) / len(values) for name, values in sorted(totals.items())}


def _normalised(vectors: torch.Tensor) -> torch.Tensor:
    vectors = vectors.detach().float().cpu()
    return torch.nn.functional.normalize(vectors, dim=-1) if vectors.numel() else vectors
