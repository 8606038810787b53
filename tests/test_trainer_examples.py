"""Training examples from sessions, by the cascade model; triples and their batches."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
import torch

from schemas.sessions import StoredSession
from trainer.examples import (
    ItemRef,
    build_examples,
    held_out_queries,
    held_out_session,
    session_example,
    split_queries,
    split_sessions,
)
from trainer.triples import Triple, TripleCollator, build_triples, relevant_by_query

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_session(
    session_id: str,
    shown: list[str],
    clicked: list[str] = (),
    *,
    query: str = "query",
    ranks: list[float] | None = None,
    is_irrelevant: bool = False,
) -> StoredSession:
    ranks = ranks if ranks is not None else list(range(1, len(shown) + 1))
    return StoredSession(
        session_id=session_id,
        search_query=query,
        search_meta={},
        search_results=[{"object_id": o, "rank": r} for o, r in zip(shown, ranks)],
        created_at=NOW,
        events=[{"event_id": f"{session_id}-e{i}", "object_id": o, "created_at": NOW} for i, o in enumerate(clicked)],
        is_irrelevant=is_irrelevant,
        closed_at=NOW,
        close_reason="gap",
        batch_id="batch-1",
    )


def ids(items) -> list[str]:
    return [item.object_id for item in items]


def test_one_click_makes_the_results_shown_above_it_negatives():
    example = session_example(make_session("s", ["a", "b", "c", "d"], ["c"]))
    assert ids(example.positives) == ["c"]
    assert ids(example.negatives) == ["a", "b"]  # d, below the click, may never have been seen
    assert not example.is_irrelevant


def test_a_session_without_clicks_teaches_nothing_and_is_dropped():
    example = session_example(make_session("s", ["a", "b"]))
    assert example.is_empty and not example.is_irrelevant
    assert build_examples([make_session("s", ["a", "b"])]) == []


def test_with_rank_gaps_negatives_are_those_above_the_lowest_placed_click():
    session = make_session("s", ["a", "b", "c", "d", "e"], ["b", "d", "b"], ranks=[3, 10, 11, 40, 41])
    example = session_example(session)
    assert ids(example.positives) == ["b", "d"]  # deduplicated, in the engine's order
    assert ids(example.negatives) == ["a", "c"]


def test_ranks_are_kept_exactly_as_the_engine_gave_them_with_each_position():
    session = make_session("s", ["x", "y", "z"], ["z"], ranks=[0.5, 7.25, 9.0])
    example = session_example(session)
    assert example.positives == (ItemRef("z", 9.0, 3),)
    assert example.negatives == (ItemRef("x", 0.5, 1), ItemRef("y", 7.25, 2))


def test_a_session_marked_irrelevant_keeps_the_flag_even_with_clicks():
    example = session_example(make_session("s", ["a", "b", "c"], ["b"], is_irrelevant=True))
    assert example.is_irrelevant
    assert example.positives == ()
    assert ids(example.negatives) == ["a", "b", "c"]  # everything shown is a negative
    held_out = held_out_session(make_session("s", ["a", "b", "c"], ["b"], is_irrelevant=True))
    assert held_out.is_irrelevant and held_out.relevant == frozenset()


def test_clicks_on_objects_that_were_not_shown_are_ignored():
    example = session_example(make_session("s", ["a", "b"], ["zzz", "b"]))
    assert ids(example.positives) == ["b"] and ids(example.negatives) == ["a"]


def test_not_irrelevant_only_drops_sessions_marked_irrelevant():
    sessions = [make_session("s1", ["a", "b"], ["b"]), make_session("s2", ["a", "b"], is_irrelevant=True)]
    assert [e.session_id for e in build_examples(sessions, not_irrelevant_only=True)] == ["s1"]
    assert [e.session_id for e in build_examples(sessions, not_irrelevant_only=False)] == ["s1", "s2"]


def test_downsampling_keeps_a_rounded_up_share_without_replacement_and_is_seeded():
    shown = [f"o{i}" for i in range(11)]
    session = make_session("s", shown, ["o10"])
    kept = session_example(session, negative_downsampling=0.35, seed=7).negatives
    assert len(kept) == 4  # ceil(0.35 * 10)
    assert len(set(ids(kept))) == 4 and set(ids(kept)) <= set(shown[:10])
    assert [k.rank for k in kept] == sorted(k.rank for k in kept)  # still in the engine's order
    assert session_example(session, negative_downsampling=0.35, seed=7).negatives == kept
    samples = {ids(session_example(session, negative_downsampling=0.35, seed=s).negatives).__str__() for s in range(20)}
    assert len(samples) > 1
    # a single skipped result is kept: ceil, not int
    assert len(session_example(make_session("t", ["a", "b"], ["b"]), negative_downsampling=0.1).negatives) == 1


def test_the_split_is_stable_whatever_the_order_and_the_other_sessions():
    sessions = [make_session(f"s{i}", ["a", "b"], ["b"]) for i in range(200)]
    train, test = split_sessions(sessions, 0.2)
    assert 20 <= len(test) <= 60 and len(train) + len(test) == 200
    shuffled = sessions[:]
    random.Random(1).shuffle(shuffled)
    _, test_again = split_sessions(shuffled, 0.2)
    assert {s.session_id for s in test_again} == {s.session_id for s in test}
    _, test_of_half = split_sessions(sessions[:100], 0.2)
    assert {s.session_id for s in test_of_half} == {s.session_id for s in test if int(s.session_id[1:]) < 100}


def test_a_tiny_batch_still_holds_one_session_out():
    train, test = split_sessions([make_session("only-a", ["a"], ["a"]), make_session("only-b", ["a"], ["a"])], 0.01)
    assert len(test) == 1 and len(train) == 1


def test_queries_split_into_disjoint_sides_and_every_session_of_a_query_goes_with_it():
    sessions = [make_session(f"s{i}", ["a", "b"], ["b"], query=f"Query {i % 150}" + (" " if i % 2 else ""))
                for i in range(600)]
    split = split_queries(sessions, 0.2, 0.15)
    assert len(split.train) + len(split.validation) + len(split.test) == 600
    sides = [split.queries(side) for side in ("train", "validation", "test")]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert 15 <= len(sides[2]) <= 50 and 10 <= len(sides[1]) <= 40
    # "Query 7" and "query  7 " are one query: its four sessions are on one side.
    assert sum(len(side) for side in sides) == 150
    shuffled = sessions[:]
    random.Random(1).shuffle(shuffled)
    again = split_queries(shuffled, 0.2, 0.15)
    assert {s.session_id for s in again.test} == {s.session_id for s in split.test}
    fewer = split_queries(sessions[:300], 0.2, 0.15)
    assert fewer.queries("test") <= split.queries("test")


def test_held_out_queries_weight_each_click_by_the_inverse_propensity_of_its_position():
    sessions = [make_session("s1", ["a", "b", "c"], ["a"], query="Red Shoe"),
                make_session("s2", ["a", "b", "c"], ["c"], query="red  shoe"),
                make_session("s3", ["x"], [], query="other")]
    (other, red) = held_out_queries(sessions, propensity=lambda position: 1.0 / position)
    assert red.key == "red shoe" and len(red.sessions) == 2
    assert red.gains == {"a": pytest.approx(0.5), "c": pytest.approx(1.5)}  # a click at 3 says more
    assert other.gains == {}
    (_, plain) = held_out_queries(sessions)
    assert plain.gains == {"a": 0.5, "c": 0.5}


def test_triples_are_positives_times_negatives():
    examples = build_examples([make_session("s", ["a", "b", "c", "d"], ["b", "d"])])
    assert build_triples(examples) == [Triple("query", p, n) for p in ("b", "d") for n in ("a", "c")]


def test_irrelevant_negatives_pair_with_positives_clicked_for_the_same_query_else_stand_alone():
    sessions = [
        make_session("r", ["a", "b"], ["b"], query="red shoes"),
        make_session("i1", ["x", "y"], query="Red  Shoes", is_irrelevant=True),
        make_session("i2", ["z"], query="blue hats", is_irrelevant=True),
    ]
    triples = build_triples(build_examples(sessions, not_irrelevant_only=False))
    assert Triple("Red  Shoes", "b", "x") in triples and Triple("Red  Shoes", "b", "y") in triples
    assert Triple("blue hats", None, "z") in triples


def test_a_batch_masks_items_known_relevant_to_a_query():
    examples = build_examples(
        [
            make_session("s1", ["n1", "p1", "p2"], ["p1", "p2"], query="q1"),
            make_session("s2", ["p1", "n2"], ["n2"], query="q2"),  # p1 skipped here, clicked for q1
        ]
    )
    batch = TripleCollator(relevant_by_query(examples))(build_triples(examples))
    assert batch.queries == ["q1", "q1", "q2"]
    assert batch.positives == ["p1", "p2", "n2"]
    assert batch.negatives == ["n1", "p1"]
    # candidates: p1 p2 n2 | n1 p1
    assert batch.known_relevant.tolist() == [
        [True, True, False, False, True],
        [True, True, False, False, True],
        [False, False, True, False, False],
    ]
    assert batch.margin_pairs.tolist() == [[0, 0], [1, 0], [2, 1]]
    assert batch.margin_pairs.dtype == torch.long
