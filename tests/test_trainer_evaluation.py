"""The counterfactual measures over the items the batch showed for a query — so neither the starting
model's own logging nor items nobody was shown decide: ``ips_ndcg_at_10``, with clicks weighted by the
inverse examination propensity of their position, and ``cm_ndcg_at_10`` (the gate's default), with each
item's click rate over the times it was likely examined, which knows that users stop."""

from __future__ import annotations

import pytest
import torch

from tests.test_trainer_examples import make_session
from trainer.evaluation import CatalogEvaluator, Snapshot, mean_of
from trainer.examples import held_out_queries
from trainer.propensity import Propensity, prior

SHOWN = [f"shown-{i}" for i in range(4)]
ITEMS = [*SHOWN, "never-shown"]
TEXTS = {item: item for item in ITEMS}


def snapshot(evaluator: CatalogEvaluator, scores_by_query: dict[str, dict[str, float]]) -> Snapshot:
    """A snapshot whose query·item scores are the given ones: one dimension per item, a query's vector
    holds its scores and every item is a unit vector."""
    dim = len(evaluator.universe)
    items = torch.eye(dim)
    queries = torch.zeros(len(evaluator.queries), dim)
    for row, query in enumerate(evaluator.queries):
        for item, score in scores_by_query[query.key].items():
            queries[row, evaluator.position[item]] = score
    return Snapshot(queries, items)


def evaluator_for(sessions, propensity=None) -> CatalogEvaluator:
    return CatalogEvaluator({"test": held_out_queries(sessions, propensity)}, ITEMS, TEXTS)


def order(*items: str) -> dict[str, float]:
    """Scores that rank ``items`` in this order, above every other item."""
    return {item: 1.0 - 0.1 * place for place, item in enumerate(items)}


def test_an_item_nobody_was_shown_costs_the_catalog_measure_but_not_the_counterfactual_one():
    evaluator = evaluator_for([make_session("s1", SHOWN, ["shown-2"], query="tent")])
    clicked_first = snapshot(evaluator, {"tent": order("shown-2", "shown-0", "shown-1", "shown-3")})
    unseen_first = snapshot(evaluator, {"tent": order("never-shown", "shown-2", "shown-0", "shown-1", "shown-3")})

    first, second = evaluator.metrics(clicked_first, "test"), evaluator.metrics(unseen_first, "test")
    assert first["ndcg_at_10"] == pytest.approx(1.0) and second["ndcg_at_10"] < 0.7
    assert first["ips_ndcg_at_10"] == pytest.approx(1.0) and second["ips_ndcg_at_10"] == pytest.approx(1.0)


def test_a_click_far_down_the_list_counts_by_the_inverse_of_its_examination_propensity():
    # Query "a" was clicked at position 1, "b" at position 4 (examined half as often under 1/sqrt(k)).
    sessions = [make_session("s1", SHOWN, ["shown-0"], query="a"), make_session("s2", SHOWN, ["shown-3"], query="b")]
    evaluator = evaluator_for(sessions, prior(10, 0.5))
    keeps_a = snapshot(evaluator, {"a": order("shown-0", "shown-1", "shown-2", "shown-3"),
                                   "b": order("shown-0", "shown-1", "shown-2", "shown-3")})
    lifts_b = snapshot(evaluator, {"a": order("shown-1", "shown-2", "shown-3", "shown-0"),
                                   "b": order("shown-3", "shown-0", "shown-1", "shown-2")})
    logging_order, lifted = mean_of(evaluator.per_query(keeps_a, "test")), mean_of(evaluator.per_query(lifts_b, "test"))

    # Per-query nDCG calls the two a tie: each puts one query's click first and the other's fourth.
    assert logging_order["ndcg_at_10"] == pytest.approx(lifted["ndcg_at_10"])
    # Weighted, the click at position 4 is worth two at position 1: bringing it up is the better model.
    discount = 1 / 2.321928  # 1 / log2(5), position 4
    assert logging_order["ips_ndcg_at_10"] == pytest.approx((1 + 2 * discount) / 3, rel=1e-4)
    assert lifted["ips_ndcg_at_10"] == pytest.approx((discount + 2) / 3, rel=1e-4)


def test_a_query_without_clicks_has_no_counterfactual_measure():
    evaluator = evaluator_for([make_session("s1", SHOWN, [], query="a"), make_session("s2", SHOWN, ["shown-1"], query="b")])
    found = evaluator.per_query(snapshot(evaluator, {"a": order(*SHOWN), "b": order(*SHOWN)}), "test")
    assert "ips_ndcg_at_10" not in found.get("a", {}) and "ips_ndcg_at_10" in found["b"]


def test_an_item_below_where_users_stopped_keeps_the_querys_click_rate_instead_of_counting_as_skipped():
    # Every position is examined, but a user stops after the first click: both users passed over
    # shown-0, clicked shown-1 and never saw shown-2 or shown-3.
    stops_after_one_click = Propensity((1.0,) * 10, (True,) * 10, 0.0, continuation=(1.0, 0.0))
    sessions = [make_session(f"s{i}", SHOWN, ["shown-1"], query="tent") for i in range(2)]
    (tent,) = held_out_queries(sessions, stops_after_one_click)
    # The query's rate is 2 clicks in 4 examinations; each item counts it as one more examination.
    assert tent.relevance == pytest.approx({"shown-0": 0.5 / 3, "shown-1": 2.5 / 3, "shown-2": 0.5, "shown-3": 0.5})

    evaluator = evaluator_for(sessions, stops_after_one_click)
    skipped_second = evaluator.metrics(snapshot(evaluator, {"tent": order("shown-1", "shown-0", "shown-2", "shown-3")}))
    unseen_second = evaluator.metrics(snapshot(evaluator, {"tent": order("shown-1", "shown-3", "shown-2", "shown-0")}))
    assert unseen_second["cm_ndcg_at_10"] > skipped_second["cm_ndcg_at_10"]
    # Counted as clicked or not, the two orders are alike: the unseen items are as unclicked as shown-0.
    assert unseen_second["ips_ndcg_at_10"] == pytest.approx(skipped_second["ips_ndcg_at_10"])
