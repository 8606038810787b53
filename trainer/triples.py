"""Training units: (query, positive, negative) triples, and the batches the losses consume.

A relevant session gives one triple per positive × negative (the reference EmbeddingStudio's Cartesian product), or
(query, positive, None) when nothing was skipped above its clicks.

A session marked irrelevant says "these results are wrong for this query" but names nothing right.
Its negatives are used two ways, both sound:

- paired with the positives that other training sessions of the *same query text* clicked (those
  items are known to be relevant to this query), so the margin loss can rank them below;
- otherwise as (query, None, negative): the negative joins the batch's candidates in the in-batch
  contrastive loss, pushed away from every query of the batch that does not know it as relevant.
  The margin loss has no positive to compare it with and ignores it.

The reference EmbeddingStudio instead borrowed positives from an arbitrary other session, of another query.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from trainer.examples import SessionExample, normalise_query


@dataclass(frozen=True)
class Triple:
    query: str
    positive: str | None  # object id
    negative: str | None  # object id
    weight: float = 1.0  # of the positive's click: inverse examination propensity of its position


query_key = normalise_query


def relevant_by_query(examples: Iterable[SessionExample]) -> dict[str, frozenset[str]]:
    """Every object clicked for each query text (normalised), over the training sessions."""
    found: dict[str, set[str]] = defaultdict(set)
    for example in examples:
        for item in example.positives:
            found[query_key(example.query)].add(item.object_id)
    return {key: frozenset(ids) for key, ids in found.items()}


def build_triples(examples: Sequence[SessionExample],
                  propensity: Callable[[int], float] | None = None) -> list[Triple]:
    """``propensity(position)`` weights each click by the inverse chance its position was examined."""
    relevant = relevant_by_query(examples)
    triples: list[Triple] = []
    for example in examples:
        if example.positives:
            positives = [(item.object_id, _weight(item.position, propensity)) for item in example.positives]
        else:
            # Sorted: the set's iteration order would make the triples depend on the hash seed.
            positives = [(p, 1.0) for p in sorted(relevant.get(query_key(example.query), ()))]
        negatives = [item.object_id for item in example.negatives]
        if positives and negatives:
            triples.extend(Triple(example.query, p, n, w) for p, w in positives for n in negatives)
        elif positives and not example.is_irrelevant:
            triples.extend(Triple(example.query, p, None, w) for p, w in positives)
        else:
            triples.extend(Triple(example.query, None, n) for n in negatives)
    return triples


def _weight(position: int, propensity: Callable[[int], float] | None) -> float:
    if propensity is None or position < 1:
        return 1.0
    return 1.0 / max(propensity(position), 1e-3)


@dataclass
class TripleBatch:
    """What one training step sees.

    Rows are the distinct (query, positive) pairs; candidates are the rows' positives followed by the
    batch's distinct negatives. ``margin_pairs[k] = (row, negative)`` indexes one margin-loss pair.
    """

    queries: list[str]
    positives: list[str]  # object id per row
    negatives: list[str]  # distinct object ids
    margin_pairs: torch.Tensor  # long [P, 2]
    known_relevant: torch.Tensor  # bool [rows, rows + negatives]
    weights: torch.Tensor | None = None  # float [rows]: each row's click weight

    def __len__(self) -> int:
        return len(self.queries)


class TripleCollator:
    """Turns a list of triples into a TripleBatch; knows which items are relevant to which query so
    that an item clicked for a query is never used as that query's negative."""

    def __init__(self, relevant: dict[str, frozenset[str]]):
        self.relevant = relevant

    def __call__(self, triples: Sequence[Triple]) -> TripleBatch:
        rows: dict[tuple[str, str], int] = {}
        row_weights: list[float] = []
        negatives: dict[str, int] = {}
        pairs: list[tuple[int, int]] = []
        for triple in triples:
            row = None
            if triple.positive is not None:
                row = rows.setdefault((triple.query, triple.positive), len(rows))
                if row == len(row_weights):
                    row_weights.append(triple.weight)
            if triple.negative is not None:
                column = negatives.setdefault(triple.negative, len(negatives))
                if row is not None:
                    pairs.append((row, column))
        queries = [query for query, _ in rows]
        positives = [positive for _, positive in rows]
        candidates = positives + list(negatives)
        known_relevant = torch.zeros((len(queries), len(candidates)), dtype=torch.bool)
        for i, (query, positive) in enumerate(rows):
            relevant = self.relevant.get(query_key(query), frozenset()) | {positive}
            for j, candidate in enumerate(candidates):
                known_relevant[i, j] = candidate in relevant
        return TripleBatch(
            queries=queries,
            positives=positives,
            negatives=list(negatives),
            margin_pairs=torch.tensor(sorted(set(pairs)), dtype=torch.long).reshape(-1, 2),
            known_relevant=known_relevant,
            weights=torch.tensor(row_weights, dtype=torch.float32),
        )
