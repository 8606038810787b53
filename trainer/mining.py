"""Hard negatives mined from the item universe with the current model, refreshed every epoch.

Skipped results only say what the engine showed; the items the *current* model would wrongly put near
the top are what it most needs to push away. For each training query, the universe is ranked with the
model as it is at the start of the epoch, and negatives are drawn from a rank window (not the very top:
those are often unlabelled relevant items), never an item clicked for that query.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import torch

from trainer.towers import EmbeddingTowers
from trainer.triples import Triple, query_key


def mine_negatives(towers: EmbeddingTowers, triples: Sequence[Triple], texts: Mapping[str, str],
                   relevant: Mapping[str, frozenset[str]], *, per_positive: int, window: tuple[int, int],
                   seed: int, batch_size: int = 64) -> list[Triple]:
    """``per_positive`` mined (query, positive, negative) triples for every (query, positive) pair."""
    rows = sorted({(t.query, t.positive, t.weight) for t in triples if t.positive is not None})
    if per_positive <= 0 or not rows:
        return []
    start, stop = window
    items = sorted(texts)
    queries = sorted({query for query, _, _ in rows})
    query_vectors = torch.nn.functional.normalize(towers.embed_queries(queries, batch_size).float().cpu(), dim=-1)
    item_vectors = torch.nn.functional.normalize(
        towers.embed_items([texts[i] for i in items], batch_size).float().cpu(), dim=-1)
    depth = min(stop, len(items))
    top = torch.topk(query_vectors @ item_vectors.T, depth, dim=1).indices.tolist()
    pools = {}
    for query, ranked in zip(queries, top):
        known = relevant.get(query_key(query), frozenset())
        pools[query] = [items[i] for i in ranked[start:depth] if items[i] not in known]
    rng = random.Random(seed)
    mined = []
    for query, positive, weight in rows:
        pool = [i for i in pools[query] if i != positive]
        for negative in rng.sample(pool, min(per_positive, len(pool))):
            mined.append(Triple(query, positive, negative, weight))
    return mined
