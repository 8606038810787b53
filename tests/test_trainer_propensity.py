"""Examination propensity by position, from the batch's own logs, with a prior where they say nothing."""

from __future__ import annotations

import random

import pytest

from tests.test_trainer_examples import make_session
from trainer.examples import build_examples
from trainer.propensity import estimate_propensity, prior
from trainer.triples import TripleCollator, build_triples, relevant_by_query

TRUE = [1.0, 0.7, 0.5, 0.4, 0.3]


def logged_sessions(n: int, seed: int = 0, rerank: bool = True):
    """Users examine position k with TRUE[k-1] and click an examined relevant item; the engine's order
    varies between sessions of a query (as it does while a model is retrained), or not."""
    rng = random.Random(seed)
    sessions = []
    for i in range(n):
        query = f"query {i % 40}"
        items = [f"{query}-item-{j}" for j in range(5)]
        relevant = {items[j] for j in range(5) if (i % 40 + j) % 2 == 0}
        order = rng.sample(items, 5) if rerank else items
        clicked = [o for k, o in enumerate(order) if o in relevant and rng.random() < TRUE[k]]
        sessions.append(make_session(f"s{i}", order, clicked, query=query))
    return sessions


def test_click_through_of_the_same_item_at_other_positions_recovers_the_examination_curve():
    found = estimate_propensity(logged_sessions(4000), positions=5, min_pairs=20)
    assert found.source == "estimated"
    for k, expected in enumerate(TRUE, start=1):
        assert found(k) == pytest.approx(expected, abs=0.08), k
    assert list(found.by_position) == sorted(found.by_position, reverse=True)


def test_a_batch_whose_engine_never_reranked_falls_back_to_the_prior():
    found = estimate_propensity(logged_sessions(400, rerank=False), positions=5, prior_eta=1.0)
    assert found.source == "prior"
    assert found.by_position == prior(5, 1.0).by_position == (1.0, 0.5, 1 / 3, 0.25, 0.2)
    assert found.as_metrics()["propensity_at_2"] == 0.5


def test_a_click_at_a_rarely_examined_position_weighs_more_in_training():
    session = make_session("s", ["a", "b", "c", "d"], ["a", "d"])
    examples = build_examples([session])
    triples = build_triples(examples, prior(10, 1.0))
    weights = {t.positive: t.weight for t in triples}
    assert weights == {"a": 1.0, "d": 4.0}
    batch = TripleCollator(relevant_by_query(examples))(triples)
    assert dict(zip(batch.positives, batch.weights.tolist())) == {"a": 1.0, "d": 4.0}
    assert {t.weight for t in build_triples(examples)} == {1.0}


def stopping_sessions(n: int, stop_after: int | None, seed: int = 0):
    """Ten shown items, every one relevant and examined at 1/sqrt(k); users stop after ``stop_after``
    clicks (None: they never stop early). The engine's order never changes."""
    rng = random.Random(seed)
    sessions = []
    for i in range(n):
        query = f"query {i % 200}"
        items = [f"{query}-item-{j}" for j in range(10)]
        clicked = []
        for k, item in enumerate(items, start=1):
            if stop_after is not None and len(clicked) >= stop_after:
                break
            if rng.random() < k**-0.5 and rng.random() < 0.9:
                clicked.append(item)
        sessions.append(make_session(f"s{i}", items, clicked, query=query))
    return sessions


def test_users_who_stop_after_two_clicks_are_seen_to_stop_and_users_who_do_not_are_not():
    stopping = estimate_propensity(stopping_sessions(800, stop_after=2))
    assert stopping.continuation[1] >= 0.9
    assert stopping.continuation[2] < 0.2 and stopping.continuation[-1] < 0.2
    assert stopping.exposure(5, clicks_above=2) < 0.2 * stopping(5)
    assert stopping.as_metrics()["continuation_after_2_clicks"] == stopping.continuation[2]

    looking_on = estimate_propensity(stopping_sessions(800, stop_after=None))
    assert min(looking_on.continuation) > 0.9
    assert looking_on.exposure(5, clicks_above=3) > 0.9 * looking_on(5)


def test_without_a_continuation_estimate_users_are_taken_to_look_on_after_their_clicks():
    assert prior(10, 0.5).exposure(4, clicks_above=3) == prior(10, 0.5)(4) == 0.5
