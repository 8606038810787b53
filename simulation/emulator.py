"""A deterministic clickstream for demos and load tests: the same seed gives the same events.

Each session is a search showing ``results_per_search`` items of a small built-in catalog, a few
clicks on them, sometimes an "irrelevant" mark, sometimes an explicit end. Timestamps start at a
fixed instant, so two runs produce byte-identical JSON. (Later: a position-biased click model over
a real catalog.)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from schemas.clickstream import ClickstreamEvent as Event
from schemas.clickstream import Interaction, MarkIrrelevant, SearchResult, SearchSession, SessionEnd

START = datetime(2026, 1, 1, tzinfo=timezone.utc)

_COLOURS = ["red", "blue", "black", "white", "green", "grey", "brown", "yellow"]
_THINGS = ["running shoes", "rain jacket", "backpack", "wool socks", "desk lamp", "coffee mug",
           "phone case", "yoga mat", "water bottle", "headphones", "notebook", "sunglasses"]
_ADJECTIVES = ["light", "waterproof", "cheap", "premium", "small", "large", "vintage", "sport"]


@dataclass(frozen=True)
class CatalogItem:
    object_id: str
    text: str


def catalog() -> list[CatalogItem]:
    """Every colour × adjective × thing: 768 items whose text is their description."""
    items = []
    for thing in _THINGS:
        for colour in _COLOURS:
            for adjective in _ADJECTIVES:
                text = f"{adjective} {colour} {thing}"
                items.append(CatalogItem(f"item-{len(items):04d}", text))
    return items


def emulate_sessions(
    sessions: int,
    *,
    seed: int = 0,
    results_per_search: int = 10,
    session_prefix: str = "session",
    start: datetime = START,
) -> Iterator[list[Event]]:
    """``sessions`` sessions, each as its list of events in the order a client would send them."""
    rng = random.Random(seed)
    items = catalog()
    by_thing = {thing: [item for item in items if thing in item.text] for thing in _THINGS}
    others = {thing: [item for item in items if thing not in item.text] for thing in _THINGS}
    for number in range(sessions):
        yield _session(rng, by_thing, others, f"{session_prefix}-{number:06d}", results_per_search,
                       start + timedelta(seconds=number * 7))


def emulate(
    sessions: int,
    *,
    seed: int = 0,
    results_per_search: int = 10,
    session_prefix: str = "session",
    start: datetime = START,
) -> Iterator[Event]:
    """The events of ``emulate_sessions``, one session after the other."""
    for events in emulate_sessions(sessions, seed=seed, results_per_search=results_per_search,
                                   session_prefix=session_prefix, start=start):
        yield from events


def _session(rng: random.Random, by_thing: dict[str, list[CatalogItem]], others: dict[str, list[CatalogItem]],
             session_id: str, results_per_search: int, at: datetime) -> list[Event]:
    thing = rng.choice(_THINGS)
    query = f"{rng.choice(_COLOURS)} {thing}" if rng.random() < 0.7 else thing
    # Mostly items of the searched kind, a few others mixed in, as an imperfect engine would.
    matching = by_thing[thing]
    shown = rng.sample(matching, k=min(results_per_search - 2, len(matching)))
    shown += rng.sample(others[thing], k=results_per_search - len(shown))
    rng.shuffle(shown)
    events: list[Event] = [SearchSession(
        session_id=session_id,
        search_query=query,
        search_results=[
            SearchResult(object_id=item.object_id, rank=rank, meta={"text": item.text})
            for rank, item in enumerate(shown, start=1)
        ],
        user_id=f"user-{rng.randrange(1000):03d}",
        created_at=at,
    )]
    clock = at
    if rng.random() < 0.1:
        clock += timedelta(seconds=rng.uniform(2, 20))
        events.append(MarkIrrelevant(session_id=session_id, created_at=clock))
    else:
        for click in range(rng.choice([1, 1, 2, 2, 3, 4])):
            clock += timedelta(seconds=rng.uniform(1, 30))
            # Higher-ranked results are clicked more often; matching ones far more.
            weights = [(3.0 if thing in item.text else 0.3) / rank for rank, item in enumerate(shown, start=1)]
            item = rng.choices(shown, weights=weights)[0]
            events.append(Interaction(session_id=session_id, event_id=f"{session_id}-e{click}",
                                      object_id=item.object_id, created_at=clock))
    if rng.random() < 0.5:
        events.append(SessionEnd(session_id=session_id, created_at=clock + timedelta(seconds=1)))
    return events
