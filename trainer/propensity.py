"""Position bias: how likely a user was to examine each position, estimated from the batch's own logs.

A click at position 8 says more than a click at position 1: fewer users look that far. Clicks are
weighted by the inverse of the examination propensity of their position, in training (row weights of
the losses) and in the held-out relevance (``trainer.examples.held_out_queries``).

The estimate is intervention harvesting: when the same item was shown for the same query at position 1
in some sessions and at position k in others (the engine's ranking changed between them), the ratio of
its click-through rates at k and at 1 estimates ``p(k) / p(1)``, relevance being the same. Averaged
over such (query, item) pairs, made non-increasing in k and kept in ``[floor, 1]``. Positions with
fewer than ``min_pairs`` such pairs take the prior ``1 / k ** prior_eta``; a batch whose engine always
ranked the same way (nothing to harvest) is all prior, and says so in ``source``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.sessions import StoredSession
from trainer.examples import normalise_query


@dataclass(frozen=True)
class Propensity:
    """Examination probability by 1-based position; beyond the last estimated position, the last value."""

    by_position: tuple[float, ...]
    estimated: tuple[bool, ...]  # True where the batch's logs gave the value, False where the prior did
    prior_eta: float

    def __call__(self, position: int) -> float:
        if position < 1:
            return 1.0
        if position <= len(self.by_position):
            return self.by_position[position - 1]
        return self.by_position[-1] if self.by_position else 1.0

    @property
    def source(self) -> str:
        if all(self.estimated[1:]):
            return "estimated"
        return "prior" if not any(self.estimated[1:]) else "estimated+prior"

    def as_metrics(self) -> dict[str, float]:
        return {f"propensity_at_{k}": value for k, value in enumerate(self.by_position, start=1)}


def prior(positions: int, eta: float) -> Propensity:
    return Propensity(tuple(1.0 / k**eta for k in range(1, positions + 1)), (True,) + (False,) * (positions - 1), eta)


def estimate_propensity(sessions: Iterable[StoredSession], *, positions: int = 10, prior_eta: float = 0.5,
                        min_pairs: int = 20, floor: float = 0.05) -> Propensity:
    impressions: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    clicks: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for session in sessions:
        if session.is_irrelevant:
            continue
        clicked = {event.object_id for event in session.events}
        shown = sorted(session.search_results, key=lambda r: r.rank)
        query = normalise_query(session.search_query)
        for position, result in enumerate(shown[:positions], start=1):
            impressions[(query, result.object_id)][position] += 1
            clicks[(query, result.object_id)][position] += int(result.object_id in clicked)
    ratios: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for pair, seen in impressions.items():
        if 1 not in seen or len(seen) < 2:
            continue
        top_rate = clicks[pair][1] / seen[1]
        for position, count in seen.items():
            if position > 1:
                ratios[position].append((clicks[pair][position] / count, top_rate))
    values, estimated = [1.0], [True]
    for k in range(2, positions + 1):
        found = ratios.get(k, [])
        top = sum(rate for _, rate in found)
        if len(found) >= min_pairs and top > 0:
            value = sum(rate for rate, _ in found) / top
            values.append(min(values[-1], max(floor, value)))
            estimated.append(True)
        else:
            values.append(min(values[-1], 1.0 / k**prior_eta))
            estimated.append(False)
    return Propensity(tuple(values), tuple(estimated), prior_eta)
