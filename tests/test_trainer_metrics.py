"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from trainer.ranking_measures import (
    ScoredSession,
    distance_shift,
    evaluate_sessions,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    rerank,
)


def test_ndcg_of_a_single_relevant_result_at_position_three():
    assert ndcg_at_k([0, 0, 1, 0]) == pytest.approx(1 / math.log2(4))


def test_ndcg_with_two_relevant_results():
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # positions 2 and 4
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k([0, 1, 0, 1]) == pytest.approx(dcg / ideal)


def test_ndcg_only_counts_the_top_k():
    assert ndcg_at_k([0] * 10 + [1]) == 0.0
    assert ndcg_at_k([0, 0, 1], k=2) == 0.0
    assert ndcg_at_k([0, 0, 0]) == 0.0


def test_recall_and_reciprocal_rank():
    ranked = [0, 1, 0, 1, 1]
    assert recall_at_k(ranked, k=2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked) == 1.0
    assert reciprocal_rank(ranked) == 0.5
    assert reciprocal_rank([0, 0]) == 0.0


def test_rerank_orders_by_score_and_keeps_the_engine_order_on_ties():
    assert rerank([0.1, 0.9, 0.5], ["a", "b", "c"]) == ["b", "c", "a"]
    assert rerank([0.5, 0.5, 0.7], ["first", "second", "top"]) == ["top", "first", "second"]


def test_distance_shift_of_relevant_and_irrelevant_sessions():
    sessions = [
        ScoredSession(relevance=[1, 0, 1], scores=[0.8, 0.1, 0.5], baseline_scores=[0.6, 0.9, 0.5], is_irrelevant=False),
        ScoredSession(relevance=[0, 1], scores=[0.3, 0.9], baseline_scores=[0.3, 0.5], is_irrelevant=False),
        ScoredSession(relevance=[0, 0], scores=[0.2, 0.4], baseline_scores=[0.5, 0.5], is_irrelevant=True),
        ScoredSession(relevance=[0, 0], scores=[0.2], baseline_scores=[0.9], is_irrelevant=False),  # no clicks
    ]
    shifts = distance_shift(sessions)
    assert shifts["not_irrelevant_dist_shift"] == pytest.approx(((0.2 + 0.0) / 2 + 0.4) / 2)
    assert shifts["irrelevant_dist_shift"] == pytest.approx((0.3 + 0.1) / 2)


def test_held_out_metrics_average_over_sessions_with_a_relevant_result():
    sessions = [
        ScoredSession(relevance=[0, 1], scores=[0.9, 0.1], baseline_scores=[0.9, 0.1], is_irrelevant=False),
        ScoredSession(relevance=[1, 0], scores=[0.9, 0.1], baseline_scores=[0.9, 0.1], is_irrelevant=False),
        ScoredSession(relevance=[0, 0], scores=[0.9, 0.1], baseline_scores=[0.9, 0.1], is_irrelevant=True),
    ]
    metrics = evaluate_sessions(sessions)
    assert metrics["ndcg_at_10"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert metrics["mrr"] == pytest.approx(0.75)
    assert metrics["recall_at_10"] == 1.0
    assert all("@" not in name for name in metrics)  # MLflow refuses '@'
