"""The pieces behind the demo and the quality bench that need no model: the click model, the shop,
the user simulator, corpus-wide retrieval scoring and BM25."""

from __future__ import annotations

import math
import re
import random

import pytest
import torch

from bench.bm25 import BM25
from simulation.click_model import PositionBiasedClickModel
from ingest.producer import validate_event
from simulation.shop_catalog import load_shop, write_beir
from simulation.user_simulator import SimQuery, clicked_pairs, simulate_sessions, summarise
from schemas.clickstream import Interaction, MarkIrrelevant, SearchSession, SessionEnd
from trainer.retrieval_eval import CorpusIndex, score_rankings


def test_clicks_fall_with_rank_and_follow_relevance():
    model = PositionBiasedClickModel(eta=1.0, click_relevant=0.9, click_noise=0.0, max_clicks=10)
    rng = random.Random(0)
    counts = [0] * 10
    for _ in range(4000):
        for position in model.react([1.0] * 10, rng).clicked:
            counts[position] += 1
    # Examination 1/rank, click 0.9 when examined: the first result ~0.9, the fifth ~0.18.
    assert abs(counts[0] / 4000 - 0.9) < 0.03 and abs(counts[4] / 4000 - 0.18) < 0.03
    assert all(a > b for a, b in zip(counts[:4], counts[1:5]))
    irrelevant = [model.react([0.0] * 10, rng) for _ in range(500)]
    assert not any(r.clicked for r in irrelevant)
    marked = sum(r.marked_irrelevant for r in irrelevant) / 500
    assert abs(marked - model.mark_irrelevant_when_none_shown) < 0.07


def test_click_model_refuses_nonsense():
    with pytest.raises(ValueError):
        PositionBiasedClickModel(click_noise=1.5)
    with pytest.raises(ValueError):
        PositionBiasedClickModel(eta=-1)


def test_the_shop_holds_out_new_combinations_of_known_slang():
    shop = load_shop()
    assert len(shop.items) == len(shop.categories) * len(shop.colours) * len(shop.brands)
    assert len({item.object_id for item in shop.items}) == len(shop.items)
    train, held_out = shop.split()
    assert {q.slang for q in held_out} == {q.slang for q in train}
    combination = lambda q: (q.slang, q.colour, q.brand)  # noqa: E731
    assert not {combination(q) for q in held_out} & {combination(q) for q in train}
    slang = {term for category in shop.categories for term in category["slang"]}
    for item in shop.items:  # the catalog never speaks the shoppers' slang
        assert not any(term in item.text.lower().split() for term in slang if " " not in term), item
    for query in held_out:
        assert query.relevant and all(shop.items[int(i[4:]) - 1].category == query.category for i in query.relevant)
    assert shop.split() == (train, held_out)


def test_plain_shoppers_name_the_same_products_as_the_catalog_does():
    slangy, plain = load_shop(), load_shop(plain=True)
    assert plain.items == slangy.items
    names = {category["key"]: category["item"] for category in plain.categories}
    assert all(query.text.count(names[query.category]) == 1 for query in plain.queries)
    assert len(plain.queries) == len(slangy.queries) // 2  # one name per category instead of two slang terms
    wanted = lambda q: (q.category, q.colour, q.brand)  # noqa: E731
    assert {wanted(q): q.relevant for q in plain.queries} == {wanted(q): q.relevant for q in slangy.queries}
    train, held_out = plain.split()
    assert len(held_out) == 3 * len(plain.categories) and not {q.query_id for q in train} & {q.query_id for q in held_out}


def test_the_shop_exported_as_a_beir_collection_reads_back_as_the_same_split(tmp_path):
    from bench.quality import load_dataset

    shop = load_shop()
    train, held_out = shop.split()
    data = load_dataset(write_beir(shop, tmp_path / "shop"))
    assert data.split == "official train/test qrels" and len(data.ids) == len(shop.items)
    assert {q: set(j) for q, j in data.test.items()} == {q.query_id: set(q.relevant) for q in held_out}
    assert set(data.train) == {q.query_id for q in train} and not set(data.train) & set(data.test)
    assert data.texts[data.ids.index(shop.items[0].object_id)] == shop.items[0].text


def test_simulated_sessions_are_valid_clickstream_and_replay_with_their_seed():
    queries = [SimQuery(f"q{n}", f"query {n}", {f"d{n}": 1.0}) for n in range(5)]

    def rank(texts):  # query n shows its relevant document first
        return [[(f"d{int(t.split()[1])}", 1.0)] + [(f"x{k}", 0.5) for k in range(9)] for t in texts]

    sessions = simulate_sessions(queries, rank, 12, seed=4, session_prefix="t",
                                 click_model=PositionBiasedClickModel(click_noise=0.0))
    assert [s.session_id for s in sessions] == [f"t-{n:06d}" for n in range(12)]
    assert {s.query.query_id for s in sessions[:5]} == {q.query_id for q in queries}  # round robin
    for session in sessions:
        events = [validate_event(e) for e in session.events]
        assert isinstance(events[0], SearchSession) and isinstance(events[-1], SessionEnd)
        assert [r.rank for r in events[0].search_results] == list(range(1, 11))
        clicks = [e for e in events if isinstance(e, Interaction)]
        assert [c.object_id for c in clicks] == [session.shown[p] for p in session.reaction.clicked]
        assert all(c.object_id.startswith("d") for c in clicks)
        assert any(isinstance(e, MarkIrrelevant) for e in events) == session.reaction.marked_irrelevant
        times = [e.created_at for e in events]
        assert times == sorted(times)
    summary = summarise(sessions)
    assert summary.clicks == summary.relevant_clicks == sum(clicked_pairs(sessions).values())
    again = simulate_sessions(queries, rank, 12, seed=4, session_prefix="t",
                              click_model=PositionBiasedClickModel(click_noise=0.0), start=sessions[0].events[0].created_at)
    assert [s.reaction for s in again] == [s.reaction for s in sessions]


def test_corpus_scores_count_relevant_items_outside_the_top_k():
    judgments = {"q": {"a": 1.0, "b": 1.0, "z": 2.0}, "empty": {"a": 0.0}}
    scores = score_rankings({"q": ["a", "x", "b"], "empty": ["a"]}, judgments, k=3)
    assert scores["queries"] == 1.0  # a query with nothing relevant cannot be scored
    assert scores["recall_at_3"] == pytest.approx(2 / 3)  # z was never ranked: still counted
    dcg = 1 + 1 / math.log2(4)
    ideal = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    assert scores["ndcg_at_3"] == pytest.approx(dcg / ideal)
    assert scores["mrr_at_3"] == 1.0


def test_corpus_index_finds_the_nearest_items():
    vectors = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    index = CorpusIndex(["x", "y", "xy"], vectors)
    top = index.search(torch.tensor([[1.0, 0.1]]), k=2)
    assert [item for item, _ in top[0]] == ["x", "xy"]


def test_bm25_prefers_rare_matching_terms():
    bm25 = BM25(["1", "2", "3"], ["the wing flutters at high speed", "boundary layer of a wing", "heat transfer"])
    assert bm25.search("wing flutter", 3)[0][0] == "1"
    assert bm25.search("heated", 3)[0][0] == "3"
    assert bm25.search("nothing matches", 3) == []
