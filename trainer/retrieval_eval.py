"""Retrieval quality of a model over a whole corpus: encode the corpus once, rank it for each query,
score the rankings against graded judgments with the measures of ``trainer.ranking_measures``.

The held-out evaluation inside a fine-tuning run (``trainer.evaluation``) only reranks the results a
session showed; this one asks the question a search product asks: out of every item, which ten come
first? It serves the demo (base vs fine-tuned model on held-out queries), the quality bench, and the
user simulator, which shows each simulated user the current model's top results.

Embeddings are L2-normalised float32 tensors on the CPU, so a dot product is the cosine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.ranking_measures import K, ndcg_at_k, recall_at_k, reciprocal_rank

Judgments = Mapping[str, Mapping[str, float]]
"""Query id → {item id → gain}; a gain of 0 (or less) means judged not relevant."""


def encode(model, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Normalised embeddings of ``texts`` with a SentenceTransformer, no gradient, on the CPU."""
    if not texts:
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return torch.empty((0, int(dimension() or 0)))
    with torch.no_grad():
        vectors = model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True,
                               normalize_embeddings=True, show_progress_bar=progress)
    return vectors.detach().float().cpu()


@dataclass
class CorpusIndex:
    """A corpus's item ids and their embeddings under one model: exact (brute-force) top-k search."""

    ids: list[str]
    embeddings: torch.Tensor  # [items, dim], normalised

    @classmethod
    def build(cls, model, ids: Sequence[str], texts: Sequence[str], *, batch_size: int = 64,
              progress: bool = False, cache_dir: str | Path | None = None, model_key: str = "") -> CorpusIndex:
        """Encode ``texts``; with ``cache_dir`` and a ``model_key`` naming the model's weights, the
        embeddings are kept on disk and read back next time for the same model, texts and length."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        cache = None
        if cache_dir is not None and model_key:
            cache = Path(cache_dir) / f"corpus-{_corpus_key(model, model_key, ids, texts)}.pt"
            if cache.is_file():
                return cls(list(ids), torch.load(cache, weights_only=True))
        index = cls(list(ids), encode(model, texts, batch_size=batch_size, progress=progress))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(".part")
            torch.save(index.embeddings, partial)
            partial.replace(cache)
        return index

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query_embeddings: torch.Tensor, k: int = K, chunk: int = 256) -> list[list[tuple[str, float]]]:
        """The ``k`` items closest to each query, best first, as (item id, cosine)."""
        k = min(k, len(self.ids))
        found: list[list[tuple[str, float]]] = []
        for start in range(0, query_embeddings.shape[0], chunk):
            scores = query_embeddings[start : start + chunk].float() @ self.embeddings.T
            values, indices = torch.topk(scores, k, dim=1)
            for row_values, row_indices in zip(values.tolist(), indices.tolist()):
                found.append([(self.ids[i], v) for i, v in zip(row_indices, row_values)])
        return found


def ranker(model, index: CorpusIndex, k: int = K, batch_size: int = 64) -> Callable[[Sequence[str]], list[list[tuple[str, float]]]]:
    """``rank(query_texts) -> top k per query``: what a search engine on ``model`` would show."""

    def rank(queries: Sequence[str]) -> list[list[tuple[str, float]]]:
        return index.search(encode(model, queries, batch_size=batch_size), k)

    return rank


def score_rankings(rankings: Mapping[str, Sequence[str]], judgments: Judgments, k: int = K) -> dict[str, float]:
    """Mean nDCG@k, Recall@k and MRR@k over the judged queries that have a relevant item.

    ``rankings`` holds each query's ranked item ids (at least the top k). Queries without any
    relevant judgment are left out (nothing can be found for them); so are unranked queries.
    """
    per_query = per_query_scores(rankings, judgments, k)
    if not per_query:
        return {}
    n = len(per_query)
    names = next(iter(per_query.values())).keys()
    result = {name: sum(scores[name] for scores in per_query.values()) / n for name in names}
    result["queries"] = float(n)
    return result


def per_query_scores(rankings: Mapping[str, Sequence[str]], judgments: Judgments, k: int = K) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    for query_id, ranked in rankings.items():
        gains = {item: float(gain) for item, gain in judgments.get(query_id, {}).items() if gain > 0}
        if not gains:
            continue
        top = list(ranked[:k])
        ranked_gains = [gains.get(item, 0.0) for item in top]
        # The relevant items the top k missed, appended: the ideal ranking and the recall's
        # denominator must see every relevant item, wherever the model put it.
        ranked_gains += [gain for item, gain in gains.items() if item not in set(top)]
        scores[query_id] = {
            f"ndcg_at_{k}": ndcg_at_k(ranked_gains, k),
            f"recall_at_{k}": recall_at_k(ranked_gains, k),
            f"mrr_at_{k}": reciprocal_rank(ranked_gains[:k]),
        }
    return scores


def evaluate_model(model, index: CorpusIndex, queries: Mapping[str, str], judgments: Judgments, k: int = K,
                   batch_size: int = 64) -> dict[str, float]:
    """Rank ``index`` for every query (id → text) with ``model`` and score against ``judgments``;
    ``index`` must hold the corpus embedded by the same model."""
    query_ids = [q for q in queries if any(g > 0 for g in judgments.get(q, {}).values())]
    if not query_ids:
        return {}
    top = index.search(encode(model, [queries[q] for q in query_ids], batch_size=batch_size), k)
    return score_rankings({q: [item for item, _ in hits] for q, hits in zip(query_ids, top)}, judgments, k)


def model_key(model_dir: str | Path) -> str:
    """A short fingerprint of a SentenceTransformer folder's weights and configuration files."""
    digest = hashlib.sha256()
    folder = Path(model_dir)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".bin")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(str(path.stat().st_size).encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))  # the head of each file: enough to tell models apart
    return digest.hexdigest()[:16]


def _corpus_key(model, model_key_: str, ids: Sequence[str], texts: Sequence[str]) -> str:
    digest = hashlib.sha256(model_key_.encode())
    digest.update(str(getattr(model, "max_seq_length", "")).encode())
    for item_id, text in zip(ids, texts):
        digest.update(item_id.encode())
        digest.update(b"\0")
        digest.update(text.encode())
        digest.update(b"\1")
    return digest.hexdigest()[:20]
