"""``examples_order``: which triples each epoch trains on, by their difficulty under the current model.

For a triple with both items, the margin violation ``v = margin − (s⁺ − s⁻)`` (cosines of the
current model, measured at the start of the epoch) sorts it into:

- hard: the negative scores above the positive (v > margin);
- medium: right order but inside the margin (0 < v ≤ margin);
- soft: the margin already holds (v ≤ 0).

Epoch i uses ``examples_order[min(i, len − 1)]``, so ``soft_all, medium_all, hard_all`` is a
curriculum that ends on the hard pairs. Triples with only a positive or only a negative have no pair
difficulty and are kept in every epoch. When an epoch's selection is empty, it trains on all triples
rather than not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch

from trainer.params import ExamplesType
from trainer.towers import EmbeddingTowers
from trainer.triples import Triple

log = logging.getLogger(__name__)


def epoch_examples_type(order: Sequence[ExamplesType], epoch: int) -> ExamplesType:
    return order[min(epoch, len(order) - 1)]


def difficulty(positive_score: float, negative_score: float, margin: float) -> ExamplesType:
    lead = positive_score - negative_score
    if lead < 0:
        return ExamplesType.hard_all
    if lead < margin:
        return ExamplesType.medium_all
    return ExamplesType.soft_all


def select_triples(
    triples: Sequence[Triple],
    examples_type: ExamplesType,
    towers: EmbeddingTowers,
    texts: Mapping[str, str],
    margin: float,
) -> list[Triple]:
    if examples_type == ExamplesType.all_examples:
        return list(triples)
    paired = [t for t in triples if t.positive is not None and t.negative is not None]
    unpaired = [t for t in triples if t.positive is None or t.negative is None]
    queries = sorted({t.query for t in paired})
    items = sorted({t.positive for t in paired} | {t.negative for t in paired})  # type: ignore[arg-type]
    if not paired:
        return list(triples)
    query_vectors = dict(zip(queries, towers.embed_queries(queries)))
    item_vectors = dict(zip(items, towers.embed_items([texts[i] for i in items])))
    chosen = []
    for triple in paired:
        query = query_vectors[triple.query]
        positive = float(torch.dot(query, item_vectors[triple.positive]))
        negative = float(torch.dot(query, item_vectors[triple.negative]))
        if difficulty(positive, negative, margin) == examples_type:
            chosen.append(triple)
    if not chosen:
        log.info("no %s triples this epoch; training on all of them", examples_type.name)
        return list(triples)
    return chosen + unpaired
