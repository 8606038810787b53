"""Judging a model on held-out queries over the whole item universe, for epoch, trial and announcement.

Each held-out query (its sessions grouped by normalised text, see ``trainer.examples``) is searched
over every item the task knows: all items shown anywhere in the batch, plus the whole catalog when
the item loader can list it. The main measures are what a search product sees:

- ``ndcg_at_10``, ``recall_at_10``, ``recall_at_100``, ``mrr`` over the universe, with the query's
  clicked items (weighted by inverse examination propensity) as the relevant ones;
- ``cm_ndcg_at_10``, the click-model estimate the gate decides on by default: each model ranks the
  items the batch showed for the query (the only items whose relevance the clicks can tell), and each
  item's gain is its estimated chance of a click when examined (``HeldOutQuery.relevance``): its
  clicks over the times it was likely examined, given its position and whether the user was still
  looking after the clicks above it (``trainer.propensity``), shrunk towards the query's own rate;
- ``ips_ndcg_at_10``, the inverse-propensity estimate it replaced as the default: each click counts by
  the inverse examination propensity of the position it was clicked at, and every other shown item
  counts as not relevant.

Both divide a query's DCG@10 by the mean ideal DCG@10 of the side's queries (a constant), so that the
mean over queries is the ratio of summed DCG to summed ideal DCG: a per-query normalisation would
cancel the propensity weights for every query with a single click, and the queries whose clicks came
from the top positions (position bias, not relevance) would weigh as much as the others.

Why not the catalog measures for the decision: the clicks were collected on the starting model's own
results, so every clicked item is in its top 10 by construction (its click-labelled Recall@10 is 1.0)
while the items a better model brings up were never shown and count as misses. On the demo's batch a
model that lifts true nDCG@10 of unseen queries from 0.398 to 0.519 scored +0.009 on catalog nDCG@10
(95% CI -0.030, +0.048) and +0.060 (+0.021, +0.106) on ``ips_ndcg_at_10``; with clicks that carry no
relevance (uniform, no position bias) the same estimate gave +0.011 (-0.009, +0.033): not announced.

Why ``cm`` rather than ``ips``: users stop after a few clicks, and the items below their last click
were never looked at, yet ``ips`` counts them as skipped. Where many shown items are equally relevant
it then prefers the logged order, and refuses better models: on the plain-spoken shop a perfect order
scores -0.017 by ``ips`` and +0.0125 by ``cm``, truly +0.018; with every item equally relevant ``ips``
gives a perfect order -0.176 and ``cm`` +0.002 (``python -m bench.gate_bias``,
bench/results/gate-bias*.txt, where SciFact and Cranfield show the two alike).

and, secondary, what the reference EmbeddingStudio measured:

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
from trainer.ranking_measures import (ScoredSession, dcg, distance_shift, ndcg_at_k, recall_at_k, reciprocal_rank, rerank,
                             retrieval_metrics)
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
        ideals: dict[str, dict[str, float]] = {f"ips_ndcg_at_{self.k}": {}, f"cm_ndcg_at_{self.k}": {}}
        for (row, query), ranked in zip(chosen, top):
            measures = self._catalog_measures(query, [self.universe[i] for i in ranked])
            measures.update(self._session_measures(query, snapshot, row))
            scores = self._shown_scores(query, snapshot, row)
            for name, gains in ((f"ips_ndcg_at_{self.k}", query.gains), (f"cm_ndcg_at_{self.k}", query.relevance)):
                judged = judged_dcg(gains, scores, self.k)
                if judged is not None:
                    measures[name], ideals[name][query.key] = judged
            found[query.key] = measures
        for name, ideal in ideals.items():
            scale = sum(ideal.values()) / len(ideal) if ideal else 0.0
            for key in ideal:
                found[key][name] = found[key][name] / scale if scale > 0 else 0.0
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

    def _shown_scores(self, query: HeldOutQuery, snapshot: Snapshot, row: int) -> dict[str, float]:
        """The model's score of each item shown for the query (that the universe has a text for)."""
        judged = sorted({item.object_id for s in query.sessions for item in s.shown if item.object_id in self.position})
        if not judged:
            return {}
        index = torch.tensor([self.position[i] for i in judged])
        return dict(zip(judged, (snapshot.item_vectors[index] @ snapshot.query_vectors[row]).tolist()))

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


def judged_dcg(gains: Mapping[str, float], scores: Mapping[str, float], k: int = 10) -> tuple[float, float] | None:
    """DCG@k of the order ``scores`` (a model's score of each item shown for the query that it can rank)
    gives those items, and the ideal DCG@k, both with ``gains`` (a query's ``gains`` or ``relevance``);
    None when no item it can rank has a gain."""
    judged = sorted(scores)
    found = [max(gains.get(i, 0.0), 0.0) for i in judged]
    if not any(g > 0 for g in found):
        return None
    return dcg(rerank([scores[i] for i in judged], found)[:k]), dcg(sorted(found, reverse=True)[:k])


def mean_of(per_query: PerQuery) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    for measures in per_query.values():
        for name, value in measures.items():
            totals.setdefault(name, []).append(value)
    return {name: sum(values) / len(values) for name, values in sorted(totals.items())}


def _normalised(vectors: torch.Tensor) -> torch.Tensor:
    vectors = vectors.detach().float().cpu()
    return torch.nn.functional.normalize(vectors, dim=-1) if vectors.numel() else vectors
