"""A small Okapi BM25 (Lucene's idf and length normalisation), the lexical floor of the quality bench.

Text analysis is deliberately plain: lower case, runs of letters and digits, a short English stop
list and the plural/-ed/-ing trimming of Porter's first step. With k1 0.9 and b 0.4 (the BEIR/Anserini
setting) it lands where the published BM25 figures do on SciFact.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with what which who whom how when where why do does did been being have has had "
    "we our you your he she his her its from than can could should would may might must also".split()
)


def analyse(text: str) -> list[str]:
    return [_stem(token) for token in _TOKEN.findall(text.lower()) if token not in _STOP]


def _stem(token: str) -> str:
    """Porter's step 1a and a cautious 1b: enough to match plurals and simple verb forms."""
    if len(token) <= 3 or token.isdigit():
        return token
    if token.endswith("sses"):
        token = token[:-2]
    elif token.endswith("ies"):
        token = token[:-2]
    elif token.endswith("s") and not token.endswith("ss") and not token.endswith("us") and not token.endswith("is"):
        token = token[:-1]
    for suffix in ("ing", "ed"):
        stem = token[: -len(suffix)]
        if token.endswith(suffix) and len(stem) >= 4 and any(c in "aeiou" for c in stem):
            token = stem
            break
    return token


class BM25:
    def __init__(self, ids: Sequence[str], texts: Iterable[str], k1: float = 0.9, b: float = 0.4):
        self.ids = list(ids)
        self.k1 = k1
        self.b = b
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.lengths: list[int] = []
        for number, text in enumerate(texts):
            terms = Counter(analyse(text))
            self.lengths.append(sum(terms.values()))
            for term, frequency in terms.items():
                self.postings[term].append((number, frequency))
        if len(self.lengths) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.lengths)} texts")
        self.average_length = sum(self.lengths) / max(1, len(self.lengths))
        documents = len(self.lengths)
        self.idf = {term: math.log(1 + (documents - len(p) + 0.5) / (len(p) + 0.5)) for term, p in self.postings.items()}

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        scores: dict[int, float] = defaultdict(float)
        for term in analyse(query):
            postings = self.postings.get(term)
            if not postings:
                continue
            idf = self.idf[term]
            for document, frequency in postings:
                norm = self.k1 * (1 - self.b + self.b * self.lengths[document] / self.average_length)
                scores[document] += idf * frequency * (self.k1 + 1) / (frequency + norm)
        best = heapq.nlargest(k, scores.items(), key=lambda pair: pair[1])
        return [(self.ids[document], score) for document, score in best]
