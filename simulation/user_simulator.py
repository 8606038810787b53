"""Simulated users of a search engine: each issues a query, looks at the engine's top results and
reacts by a click model; the outcome is the clickstream a search product would send.

The engine is a ``rank`` function (query texts → top results per query, best first), typically the
current embedding model over the catalog (``trainer.retrieval_eval.ranker``). What is relevant to a
query is known to the simulator (graded judgments), never to the engine or the trainer: the trainer
only sees what the users clicked, skipped and marked.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from schemas.clickstream import ClickstreamEvent as Event
from schemas.clickstream import Interaction, MarkIrrelevant, SearchResult, SearchSession, SessionEnd
from simulation.click_model import PositionBiasedClickModel, Reaction
Ranker = Callable[[Sequence[str]], list[list[tuple[str, float]]]]


@dataclass(frozen=True)
class SimQuery:
    """A query some user wants answered, and the gain of each item for it (absent: 0)."""

    query_id: str
    text: str
    gains: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SimulatedSession:
    query: SimQuery
    shown: tuple[str, ...]
    reaction: Reaction
    events: list[Event]

    @property
    def session_id(self) -> str:
        return self.events[0].session_id

    @property
    def relevant_shown(self) -> int:
        return sum(1 for item in self.shown if self.query.gains.get(item, 0) > 0)


@dataclass
class SimulationSummary:
    sessions: int = 0
    events: int = 0
    clicks: int = 0
    relevant_clicks: int = 0
    marked_irrelevant: int = 0
    with_relevant_shown: int = 0
    queries: int = 0

    def line(self) -> str:
        return (f"{self.sessions} sessions over {self.queries} distinct queries: {self.clicks} clicks "
                f"({self.relevant_clicks} on relevant items), {self.marked_irrelevant} marked irrelevant, "
                f"{self.with_relevant_shown} showed a relevant item in the top results")


def simulate_sessions(
    queries: Sequence[SimQuery],
    rank: Ranker,
    sessions: int,
    *,
    click_model: PositionBiasedClickModel = PositionBiasedClickModel(),
    item_meta: Callable[[str], dict] | None = None,
    seed: int = 0,
    session_prefix: str = "sim",
    start: datetime | None = None,
    users: int = 1000,
) -> list[SimulatedSession]:
    """``sessions`` sessions. Queries are taken in a shuffled round robin (every query once before
    any twice), so a few sessions per query cover all of them; each user then sees ``rank``'s
    results for the query and reacts by ``click_model``. ``item_meta(object_id)`` gives the meta
    sent with each shown result (e.g. its text); none by default."""
    if not queries:
        raise ValueError("no queries to simulate")
    rng = random.Random(seed)
    order = _round_robin(len(queries), sessions, rng)
    distinct = sorted({queries[i].text for i in order})
    results = dict(zip(distinct, rank(distinct))) if distinct else {}
    at = start or datetime.now(timezone.utc)
    simulated = []
    for number, query_index in enumerate(order):
        query = queries[query_index]
        shown = tuple(item for item, _ in results[query.text])
        reaction = click_model.react([query.gains.get(item, 0.0) for item in shown], rng)
        session_id = f"{session_prefix}-{number:06d}"
        user_id = f"user-{rng.randrange(users):05d}"
        events = _events(session_id, user_id, query.text, shown, reaction, item_meta, at + timedelta(seconds=3 * number),
                         rng)
        simulated.append(SimulatedSession(query, shown, reaction, events))
    return simulated


def summarise(sessions: Sequence[SimulatedSession]) -> SimulationSummary:
    summary = SimulationSummary(sessions=len(sessions), queries=len({s.query.query_id for s in sessions}))
    for session in sessions:
        summary.events += len(session.events)
        summary.clicks += len(session.reaction.clicked)
        summary.relevant_clicks += sum(1 for p in session.reaction.clicked if session.query.gains.get(session.shown[p], 0) > 0)
        summary.marked_irrelevant += session.reaction.marked_irrelevant
        summary.with_relevant_shown += session.relevant_shown > 0
    return summary


def clicked_pairs(sessions: Sequence[SimulatedSession]) -> Counter[tuple[str, str]]:
    """(query text, clicked item id) pairs with how often each was clicked."""
    pairs: Counter[tuple[str, str]] = Counter()
    for session in sessions:
        for position in session.reaction.clicked:
            pairs[(session.query.text, session.shown[position])] += 1
    return pairs


def _round_robin(count: int, sessions: int, rng: random.Random) -> list[int]:
    order: list[int] = []
    while len(order) < sessions:
        rounds = list(range(count))
        rng.shuffle(rounds)
        order += rounds
    return order[:sessions]


def _events(session_id: str, user_id: str, query: str, shown: Sequence[str], reaction: Reaction,
            item_meta: Callable[[str], dict] | None, at: datetime, rng: random.Random) -> list[Event]:
    events: list[Event] = [SearchSession(
        session_id=session_id,
        search_query=query,
        search_meta={},
        search_results=[SearchResult(object_id=item, rank=position + 1, meta=item_meta(item) if item_meta else {})
                        for position, item in enumerate(shown)],
        user_id=user_id,
        created_at=at,
    )]
    clock = at
    for number, position in enumerate(reaction.clicked):
        clock += timedelta(seconds=rng.uniform(1.0, 2.5))
        events.append(Interaction(session_id=session_id, event_id=f"{session_id}-c{number}",
                                  object_id=shown[position], created_at=clock, meta={"position": position + 1}))
    if reaction.marked_irrelevant:
        clock += timedelta(seconds=rng.uniform(1.0, 2.5))
        events.append(MarkIrrelevant(session_id=session_id, created_at=clock))
    # An explicit end: the session closes at once instead of after the inactivity gap.
    events.append(SessionEnd(session_id=session_id, created_at=clock + timedelta(seconds=0.5)))
    return events
