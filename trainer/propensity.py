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

Users also stop: after a few clicks they have found what they came for, and what lies below was never
looked at. ``continuation[c]`` is the chance a user who has clicked ``c`` results still examines the
next ones (``estimate_continuation``): the click-through of the same item at the same position for the
same query, after ``c`` clicks above it against after fewer. Examination depends only on the position
and on the clicks above it, never on the item, so the ratio isolates the stopping. The
estimate is an upper bound (about 95%): overstating continuation counts unexamined results as seen and
skipped, which favours the order the clicks were logged on; understating it would inflate clicks deep
in the list and favour moving them up, the unsafe side.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.sessions import StoredSession
from trainer.examples import HeldOutSession, held_out_session, normalise_query


@dataclass(frozen=True)
class Propensity:
    """Examination probability by 1-based position; beyond the last estimated position, the last value."""

    by_position: tuple[float, ...]
    estimated: tuple[bool, ...]  # True where the batch's logs gave the value, False where the prior did
    prior_eta: float
    continuation: tuple[float, ...] = ()  # by clicks above, 0 first; beyond the last, the last; () = never stop

    def __call__(self, position: int) -> float:
        if position < 1:
            return 1.0
        if position <= len(self.by_position):
            return self.by_position[position - 1]
        return self.by_position[-1] if self.by_position else 1.0

    def exposure(self, position: int, clicks_above: int) -> float:
        """Chance that a user examined ``position`` having clicked ``clicks_above`` results above it."""
        return self(position) * self.still_looking(clicks_above)

    def still_looking(self, clicks_above: int) -> float:
        if not self.continuation or clicks_above <= 0:
            return 1.0
        return self.continuation[min(clicks_above, len(self.continuation) - 1)]

    @property
    def source(self) -> str:
        if all(self.estimated[1:]):
            return "estimated"
        return "prior" if not any(self.estimated[1:]) else "estimated+prior"

    def as_metrics(self) -> dict[str, float]:
        found = {f"propensity_at_{k}": value for k, value in enumerate(self.by_position, start=1)}
        found.update({f"continuation_after_{c}_clicks": value for c, value in enumerate(self.continuation) if c})
        return found


def prior(positions: int, eta: float) -> Propensity:
    return Propensity(tuple(1.0 / k**eta for k in range(1, positions + 1)), (True,) + (False,) * (positions - 1), eta)


def estimate_propensity(sessions: Iterable[StoredSession], *, positions: int = 10, prior_eta: float = 0.5,
                        min_pairs: int = 20, floor: float = 0.05) -> Propensity:
    sessions = list(sessions)
    by_position, estimated = _examination(sessions, positions, prior_eta, min_pairs, floor)
    return Propensity(by_position, estimated, prior_eta, estimate_continuation(map(held_out_session, sessions)))


def _examination(sessions: list[StoredSession], positions: int, prior_eta: float, min_pairs: int,
                 floor: float) -> tuple[tuple[float, ...], tuple[bool, ...]]:
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
    return tuple(values), tuple(estimated)


def estimate_continuation(sessions: Iterable[HeldOutSession], *, most_clicks: int = 4, min_expected: float = 10.0
                          ) -> tuple[float, ...]:
    """``continuation[c]`` for c = 0 .. ``most_clicks`` (the last stands for that many clicks or more).

    For each (query, item, position) shown after ``c`` clicks and after fewer, the clicks seen after
    ``c`` are compared with what its click rate after fewer predicts (each of those sessions counted by
    its own continuation). A count with fewer than ``min_expected`` predicted clicks keeps the previous
    value.
    """
    shown: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0] * (most_clicks + 1))
    clicked: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0] * (most_clicks + 1))
    for session in sessions:
        if session.is_irrelevant:
            continue
        query = normalise_query(session.query)
        above = 0
        for position, item in enumerate(session.shown, start=1):
            key, c = (query, item.object_id, position), min(above, most_clicks)
            shown[key][c] += 1
            if item.object_id in session.relevant:
                clicked[key][c] += 1
                above += 1
    values = [1.0]
    for c in range(1, most_clicks + 1):
        seen = expected = 0.0
        for key, counts in shown.items():
            # The key's click rate when examined, from the sessions with fewer clicks above it.
            looked = sum(counts[j] * values[j] for j in range(c))
            if counts[c] and looked > 0:
                seen += clicked[key][c]
                expected += counts[c] * sum(clicked[key][:c]) / looked
        if expected < min_expected:
            values.append(values[-1])
            continue
        # An upper bound on the Poisson count seen (about 95%), for the reason in the module docstring.
        values.append(min(1.0, (seen + 2.0 * math.sqrt(seen) + 2.0) / expected))
    return tuple(values)
