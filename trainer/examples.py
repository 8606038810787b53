"""From stored sessions to training examples, by the cascade click model.

- positives: the shown results the user interacted with (any event type), each once;
- negatives: shown results not interacted with and placed above the lowest-placed interaction
  (a user scanning top-down saw and skipped them; results below the last click may never have been
  seen, so they are not evidence of anything);
- a session marked irrelevant (the user said nothing shown was relevant) has no positives and all its
  shown results are negatives. The flag is taken as stored, even when the session has clicks: a click
  followed by "nothing here was relevant" is a click on something that disappointed.
- the engine's rank is carried along unchanged.

Interactions on objects that were not among the shown results are ignored: they cannot be placed in
the cascade, and their text may not be known to the item loader.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from schemas.sessions import StoredSession


@dataclass(frozen=True)
class ItemRef:
    object_id: str
    rank: float
    position: int = 0  # 1-based place among the session's shown results; 0 when not known


@dataclass(frozen=True)
class SessionExample:
    session_id: str
    query: str
    positives: tuple[ItemRef, ...]
    negatives: tuple[ItemRef, ...]
    is_irrelevant: bool

    @property
    def is_empty(self) -> bool:
        return not self.positives and not self.negatives


@dataclass(frozen=True)
class HeldOutSession:
    """A test session as the evaluation sees it: every shown result, and which were relevant."""

    session_id: str
    query: str
    shown: tuple[ItemRef, ...]  # in the engine's order
    relevant: frozenset[str]  # empty for an irrelevant session, whatever its clicks
    is_irrelevant: bool


def session_example(
    session: StoredSession, *, negative_downsampling: float = 1.0, seed: int = 0
) -> SessionExample:
    ordered = sorted(session.search_results, key=lambda r: r.rank)
    shown = [ItemRef(r.object_id, r.rank, position) for position, r in enumerate(ordered, start=1)]
    if session.is_irrelevant:
        positives: list[ItemRef] = []
        negatives = shown
    else:
        clicked = {event.object_id for event in session.events}
        positives = [item for item in shown if item.object_id in clicked]
        if positives:
            lowest_click = max(item.rank for item in positives)
            negatives = [item for item in shown if item.object_id not in clicked and item.rank < lowest_click]
        else:
            negatives = []
    negatives = _downsample(negatives, negative_downsampling, _session_rng(seed, session.session_id))
    return SessionExample(
        session_id=session.session_id,
        query=session.search_query,
        positives=tuple(positives),
        negatives=tuple(negatives),
        is_irrelevant=session.is_irrelevant,
    )


def build_examples(
    sessions: Iterable[StoredSession],
    *,
    negative_downsampling: float = 1.0,
    not_irrelevant_only: bool = True,
    seed: int = 0,
) -> list[SessionExample]:
    """Examples of the sessions that carry a training signal (sessions without any are dropped)."""
    examples = []
    for session in sessions:
        if not_irrelevant_only and session.is_irrelevant:
            continue
        example = session_example(session, negative_downsampling=negative_downsampling, seed=seed)
        if not example.is_empty:
            examples.append(example)
    return examples


def held_out_session(session: StoredSession) -> HeldOutSession:
    shown = tuple(sorted((ItemRef(r.object_id, r.rank) for r in session.search_results), key=lambda i: i.rank))
    shown_ids = {item.object_id for item in shown}
    relevant = frozenset() if session.is_irrelevant else frozenset(
        e.object_id for e in session.events if e.object_id in shown_ids
    )
    return HeldOutSession(session.session_id, session.search_query, shown, relevant, session.is_irrelevant)


def split_sessions(
    sessions: Sequence[StoredSession], test_fraction: float, *, salt: str = ""
) -> tuple[list[StoredSession], list[StoredSession]]:
    """Train and test sessions, decided by a hash of each session id.

    The same session always lands on the same side, whatever the order, the trial or the other
    sessions in the batch, so every trial is measured on the same held-out set. When the hash leaves
    the test side empty, the session with the smallest hash is held out (still deterministic).
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    keyed = sorted(sessions, key=lambda s: _unit_hash(salt + s.session_id))
    n_test = sum(1 for s in keyed if _unit_hash(salt + s.session_id) < test_fraction)
    if n_test == 0 and test_fraction > 0 and len(keyed) >= 2:
        n_test = 1
    test_ids = {s.session_id for s in keyed[:n_test]}
    return [s for s in sessions if s.session_id not in test_ids], [s for s in sessions if s.session_id in test_ids]


def normalise_query(query: str) -> str:
    """The key sessions are grouped by: case and runs of white space do not make a different query."""
    return " ".join(query.lower().split())


@dataclass(frozen=True)
class QuerySplit:
    """A batch's sessions on three disjoint sides by query text: every session of one (normalised)
    query lands on the same side, so no query is learned from and then judged."""

    train: list[StoredSession]
    validation: list[StoredSession]
    test: list[StoredSession]

    def queries(self, side: str) -> set[str]:
        return {normalise_query(s.search_query) for s in getattr(self, side)}


def split_queries(
    sessions: Sequence[StoredSession], test_fraction: float, validation_fraction: float, *, salt: str = ""
) -> QuerySplit:
    """Train, validation and test sessions, decided by a hash of each session's normalised query.

    The hash puts a query on the same side whatever the order, the trial, or the other queries of the
    batch: validation picks epochs and trials, test only judges the winner. Sides left empty by the
    hash stay empty (the caller decides whether the rest is enough to judge).
    """
    if not (0.0 <= test_fraction < 1.0 and 0.0 <= validation_fraction < 1.0 and test_fraction + validation_fraction < 1.0):
        raise ValueError(f"need test_fraction, validation_fraction >= 0 with a sum below 1, got "
                         f"{test_fraction} and {validation_fraction}")
    sides: dict[str, list[StoredSession]] = {"train": [], "validation": [], "test": []}
    for session in sessions:
        position = _unit_hash("query:" + salt + normalise_query(session.search_query))
        side = "test" if position < test_fraction else (
            "validation" if position < test_fraction + validation_fraction else "train")
        sides[side].append(session)
    return QuerySplit(**sides)


@dataclass(frozen=True)
class HeldOutQuery:
    """One held-out query text with every session that asked it, and the relevance the judgement scores
    a model against:

    - ``gains``: clicked items, each click weighted by the inverse examination propensity of the rank
      it was clicked at, averaged over the query's sessions;
    - ``relevance``: every shown item's estimated chance of being clicked when examined: its clicks
      over the times it was likely examined (``Propensity.exposure``: position, and whether the user
      was still looking after the clicks above it), shrunk towards the query's own rate. An item below
      where users stopped keeps the query's rate, instead of counting as seen and skipped.
    """

    key: str
    text: str
    gains: dict[str, float]  # object id -> relevance; empty when nothing was clicked
    sessions: tuple[HeldOutSession, ...]
    relevance: dict[str, float] = field(default_factory=dict)  # every shown item; empty when nothing was clicked


def held_out_queries(
    sessions: Iterable[StoredSession], propensity: Callable[[int], float] | None = None
) -> list[HeldOutQuery]:
    """Held-out sessions grouped by normalised query, in a deterministic order.

    ``propensity(position)`` (1-based position among the shown results) is the chance a user examined
    that position; None counts every click as 1.
    """
    return group_held_out((held_out_session(session) for session in sessions), propensity)


def group_held_out(
    sessions: Iterable[HeldOutSession], propensity: Callable[[int], float] | None = None, *,
    prior_strength: float = 1.0,
) -> list[HeldOutQuery]:
    """``held_out_queries`` from sessions already in the evaluation's shape (the gate-bias bench builds
    them from simulated users, without a stream worker). ``prior_strength`` is how many examinations
    the query's own click rate counts for in each item's ``relevance``."""
    grouped: dict[str, list[HeldOutSession]] = {}
    for held in sessions:
        grouped.setdefault(normalise_query(held.query), []).append(held)
    found = []
    for key in sorted(grouped):
        members = sorted(grouped[key], key=lambda s: s.session_id)
        gains: dict[str, float] = {}
        for held in members:
            for position, item in enumerate(held.shown, start=1):
                if item.object_id in held.relevant:
                    weight = 1.0 / max(propensity(position), 1e-3) if propensity is not None else 1.0
                    gains[item.object_id] = gains.get(item.object_id, 0.0) + weight / len(members)
        relevance = _click_rates(members, propensity, prior_strength) if gains else {}
        found.append(HeldOutQuery(key, members[0].query, gains, tuple(members), relevance))
    return found


def _click_rates(members: Sequence[HeldOutSession], propensity: Callable[[int], float] | None,
                 prior_strength: float) -> dict[str, float]:
    exposure = getattr(propensity, "exposure", None)
    clicks: dict[str, float] = {}
    seen: dict[str, float] = {}
    per_session: list[tuple[float, float]] = []
    for held in members:
        above = 0
        session_clicks = session_seen = 0.0
        for position, item in enumerate(held.shown, start=1):
            if exposure is not None:
                chance = exposure(position, above)
            else:
                chance = propensity(position) if propensity is not None else 1.0
            seen[item.object_id] = seen.get(item.object_id, 0.0) + chance
            clicked = item.object_id in held.relevant
            clicks[item.object_id] = clicks.get(item.object_id, 0.0) + float(clicked)
            above += int(clicked)
            session_clicks += float(clicked)
            session_seen += chance
        per_session.append((session_clicks, session_seen))
    rate = _query_rate(per_session)
    return {item: (clicks[item] + prior_strength * rate) / (seen[item] + prior_strength)
            if seen[item] + prior_strength > 0 else rate for item in seen}


def _query_rate(per_session: Sequence[tuple[float, float]]) -> float:
    """Clicks over examinations of the query's sessions, with the jackknife's bias correction: a user
    who clicks early stops early, so sessions with many clicks have few examinations and the plain
    ratio overstates the rate, which would favour moving unexamined items up."""
    clicks, seen = sum(c for c, _ in per_session), sum(e for _, e in per_session)
    if seen <= 0:
        return 0.0
    rate = clicks / seen
    left_out = [(clicks - c) / (seen - e) for c, e in per_session if seen - e > 0]
    if len(per_session) < 2 or len(left_out) < len(per_session):
        return rate
    n = len(per_session)
    return min(1.0, max(0.0, n * rate - (n - 1) * sum(left_out) / n))


def _downsample(negatives: list[ItemRef], fraction: float, rng: random.Random) -> list[ItemRef]:
    if fraction >= 1.0 or not negatives:
        return negatives
    # ceil, so a session with a single skipped result keeps it: those are the most telling negatives.
    keep = math.ceil(fraction * len(negatives))
    chosen = set(rng.sample(range(len(negatives)), keep))
    return [item for index, item in enumerate(negatives) if index in chosen]


def _session_rng(seed: int, session_id: str) -> random.Random:
    # One generator per session: the sample does not depend on which other sessions are in the batch.
    return random.Random(f"{seed}:{session_id}")


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
