"""Reading metrics endpoints back: what ``embedding-studio status`` summarises.

``scrape(urls)`` fetches every endpoint and adds the samples up across them (each process counts
its own part: two workers' events in are the worker total), keyed by metric name and labels.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    samples: dict[str, dict[Labels, float]] = field(default_factory=lambda: defaultdict(dict))
    reached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def add_text(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                values = self.samples[sample.name]
                values[labels] = values.get(labels, 0.0) + sample.value

    def total(self, name: str, **match: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``match``."""
        return sum(v for labels, v in self.samples.get(name, {}).items() if set(match.items()) <= set(labels))

    def has(self, name: str) -> bool:
        return bool(self.samples.get(name))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for labels, value in self.samples.get(name, {}).items():
            key = dict(labels).get(label)
            if key is not None:
                found[key] = found.get(key, 0.0) + value
        return found


def scrape(urls: list[str], timeout_s: float = 5.0) -> Scrape:
    result = Scrape()
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                result.add_text(response.read().decode("utf-8"))
            result.reached.append(url)
        except (OSError, ValueError) as error:
            result.failed[url] = str(error)
    return result


@dataclass(frozen=True)
class ModelQuality:
    model: str
    sessions: int
    ctr: float
    mrr: float
    irrelevant_rate: float
    abandonment: float
    live_since: float | None = None  # epoch seconds of its first search, where known


def search_quality(result: Scrape) -> list[ModelQuality]:
    """Per serving model, from the counters (summed across endpoints, so the rates are exact)."""
    sessions = result.by_label("es_search_sessions_total", "model")
    clicked = result.by_label("es_search_clicked_sessions_total", "model")
    rr = result.by_label("es_search_first_click_reciprocal_rank_total", "model")
    irrelevant = result.by_label("es_search_irrelevant_sessions_total", "model")
    first = {}
    for labels, value in result.samples.get("es_search_model_first_search_timestamp_seconds", {}).items():
        model = dict(labels).get("model")
        if model is not None and value > 0:
            first[model] = min(value, first.get(model, value))
    rows = []
    for model, count in sessions.items():
        if count <= 0:
            continue
        ctr = clicked.get(model, 0.0) / count
        rows.append(ModelQuality(model, int(count), ctr, rr.get(model, 0.0) / count,
                                 irrelevant.get(model, 0.0) / count, 1.0 - ctr, first.get(model)))
    # In the order the models went live (unknown last), so each row compares with the one before.
    return sorted(rows, key=lambda row: (row.live_since is None, row.live_since or 0.0, row.model))
