"""The announcement gate: a paired bootstrap over test queries decides, with a minimum effect and a guard."""

from __future__ import annotations

import random

from trainer.judgement import GateSettings, judge, paired_bootstrap

GATE = GateSettings(confidence=0.95, min_effect=0.01, min_test_queries=30, guard_metric="recall_at_100",
                    guard_tolerance=0.01, resamples=1000)


def per_query(values: list[float], recall: list[float] | None = None) -> dict[str, dict[str, float]]:
    recall = recall or [0.5] * len(values)
    return {f"q{i}": {"ndcg_at_10": v, "recall_at_100": r} for i, (v, r) in enumerate(zip(values, recall))}


def test_the_interval_covers_a_mean_of_zero_for_noise_and_excludes_it_for_a_real_shift():
    rng = random.Random(0)
    noise = [rng.gauss(0.0, 0.2) for _ in range(80)]
    low, high = paired_bootstrap(noise, 0.95, 2000)
    assert low < 0 < high
    shifted = [x + 0.15 for x in noise]
    low, high = paired_bootstrap(shifted, 0.95, 2000)
    assert 0 < low < sum(shifted) / len(shifted) < high


def test_a_lucky_looking_model_on_noise_is_not_announced():
    rng = random.Random(1)
    base = [rng.random() for _ in range(60)]
    tuned = [min(1.0, max(0.0, b + rng.gauss(0.02, 0.3))) for b in base]
    verdict = judge(per_query(base), per_query(tuned), "ndcg_at_10", GATE)
    assert not verdict.announce and "not significant" in verdict.reason
    assert verdict.test_queries == 60 and verdict.low < 0 < verdict.high


def test_a_consistent_lift_is_announced_with_its_interval():
    rng = random.Random(2)
    base = [rng.random() * 0.8 for _ in range(60)]
    tuned = [b + 0.1 + rng.gauss(0, 0.05) for b in base]
    verdict = judge(per_query(base), per_query(tuned), "ndcg_at_10", GATE)
    assert verdict.announce, verdict.reason
    assert verdict.low > 0 and abs(verdict.lift - 0.1) < 0.03
    assert verdict.as_fields()["test_queries"] == 60
    assert "over 60 test queries" in verdict.summary()


def test_too_few_queries_a_too_small_lift_or_a_fallen_guard_announce_nothing():
    base = [0.3 + 0.01 * (i % 7) for i in range(40)]
    few = judge(per_query(base[:12]), per_query([b + 0.2 for b in base[:12]]), "ndcg_at_10", GATE)
    assert not few.announce and few.reason == "12 held-out queries, at least 30 needed"
    small = judge(per_query(base), per_query([b + 0.004 for b in base]), "ndcg_at_10", GATE)
    assert not small.announce and "below the minimum effect" in small.reason
    guard = judge(per_query(base, [0.8] * 40), per_query([b + 0.1 for b in base], [0.7] * 40), "ndcg_at_10", GATE)
    assert not guard.announce and "recall_at_100 fell by 0.1000" in guard.reason


def test_a_lower_is_better_metric_counts_a_drop_as_a_lift():
    base = [1.0 + 0.01 * (i % 5) for i in range(40)]
    verdict = judge({f"q{i}": {"train_loss": v} for i, v in enumerate(base)},
                    {f"q{i}": {"train_loss": v - 0.2} for i, v in enumerate(base)}, "train_loss", GATE)
    assert verdict.announce and verdict.lift > 0


def test_queries_that_share_their_relevant_items_are_not_counted_as_independent_evidence():
    # Forty queries all wanting one of two items: the "lift" is one item's luck, seen forty times.
    rng = random.Random(3)
    differences = [0.3 + rng.gauss(0, 0.02) if i % 2 else -0.1 + rng.gauss(0, 0.02) for i in range(40)]
    items = [["item-a"] if i % 2 else ["item-b"] for i in range(40)]
    query_only = paired_bootstrap(differences, 0.95, 2000)
    two_way = paired_bootstrap(differences, 0.95, 2000, items=items)
    assert query_only[0] > 0  # a query-only bootstrap calls it significant
    assert two_way[0] < 0 < two_way[1]


def test_items_of_one_query_only_do_not_widen_the_interval():
    rng = random.Random(5)
    differences = [0.05 + rng.gauss(0, 0.1) for _ in range(60)]
    unique = [[f"item-{i}"] for i in range(60)]
    assert paired_bootstrap(differences, 0.95, 2000, items=unique) == paired_bootstrap(differences, 0.95, 2000)


def test_a_model_surely_worse_says_so():
    base = [0.5 + 0.01 * (i % 9) for i in range(40)]
    verdict = judge(per_query(base), per_query([b - 0.1 for b in base]), "ndcg_at_10", GATE)
    assert not verdict.announce and verdict.reason.startswith("the tuned model is worse")
