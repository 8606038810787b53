"""Answering a query from the served version: the query is embedded with the model of the version
that answers (its query tower), so a query and the vectors it is compared with share one space."""

from __future__ import annotations

from dataclasses import dataclass

from index.base import IndexVersion, NoServedVersion, SearchAnswer, VectorIndex
from index.models import embedder, encode


@dataclass
class SearchService:
    index: VectorIndex
    tracking_uri: str | None = None
    precision: str = "auto"  # of the query embedding (index.models.encode)

    def search(self, query: str, k: int = 10, version: IndexVersion | None = None) -> SearchAnswer:
        """From the served version, or from ``version`` (an older one kept for rollback, say)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        served = version or self.index.served()
        if served is None:
            raise NoServedVersion("no index version is served yet: it appears after the first refresh")
        model = embedder(served.model_uri, self.tracking_uri, "query")
        (answer,) = self.index.search(encode(model, [query], precision=self.precision).tolist(), k, version=served)
        return answer
