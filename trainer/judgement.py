"""The announcement gate: is the tuned model better than the starting one on queries it never saw?

Both models are measured on the batch's test queries (never used for training, epochs or trials);
the per-query differences of the main metric are resampled with a paired bootstrap (over queries and
over their relevant items, see ``paired_bootstrap``), and the model is announced only when

- there are at least ``min_test_queries`` judged test queries,
- the lower end of the confidence interval of the mean lift is above zero,
- the mean lift is at least ``min_effect``,
- and the guard metric (Recall@100: the rest of the catalog) falls by no more than ``guard_tolerance``.

The guard is labelled by clicks, and every clicked item of a test query was in the starting model's top
10, so the starting model's Recall@100 is 1.0 by construction and any change can only lose. A better
model does lose some: about a sixth of simulated clicks land on wrong items, and a model that has learnt
pushes some of those out of its top 100. Measured by the quality bench (bench/results), models truly
better on the queries the bench measures lost 0.000 to 0.031 (the demo's +0.29 nDCG@10 model 0.010,
the shop's +0.44 model 0.014, SciFact's 0.000 to 0.031), while the models that were worse lost 0.000
to 0.027 (Cranfield's 0.000): the guard does not tell them apart, the main metric does. At the old
tolerance of 0.01 it refused the shop's model (lift +0.21, 95% CI +0.17, +0.25; bench/results/guard).
The default of 0.05 stops a model that drops a twentieth of what users found, as one that ruins the
catalog does, and no longer stops a model for correcting noisy clicks.

A batch without signal (random queries, uniform clicks) gives per-query differences centred on zero,
so the interval straddles zero and nothing is announced, however lucky the best trial looked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.tasks import TaskJudgement
from trainer.evaluation import PerQuery
from trainer.ranking_measures import higher_is_better


@dataclass(frozen=True)
class GateSettings:
    """The gate's thresholds; their defaults are ``Settings``' (``ES_GATE_*``), and live only there."""

    confidence: float
    min_effect: float
    min_test_queries: int
    guard_metric: str
    guard_tolerance: float
    resamples: int
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> GateSettings:
        return cls(
            confidence=settings.gate_confidence, min_effect=settings.gate_min_effect,
            min_test_queries=settings.gate_min_test_queries, guard_metric=settings.gate_guard_metric,
            guard_tolerance=settings.gate_guard_tolerance, resamples=settings.gate_bootstrap_resamples,
        )


@dataclass(frozen=True)
class Judgement:
    metric: str
    base: float  # mean over the test queries
    tuned: float
    lift: float  # tuned − base, signed so that positive is better
    low: float  # confidence interval of the lift
    high: float
    confidence: float
    test_queries: int
    guard_metric: str
    guard_lift: float | None
    announce: bool
    reason: str

    def summary(self) -> str:
        guard = f"; {self.guard_metric} {self.guard_lift:+.4f}" if self.guard_lift is not None else ""
        return (f"{self.metric} {self.tuned:.4f} vs starting model {self.base:.4f}: lift {self.lift:+.4f} "
                f"[{self.confidence:.0%} CI {self.low:+.4f}, {self.high:+.4f}] over {self.test_queries} test "
                f"queries{guard}")

    def as_task_judgement(self) -> TaskJudgement:
        return TaskJudgement(metric=self.metric, base=self.base, tuned=self.tuned, announced=self.announce,
                             reason=self.reason, **self.as_fields())

    def as_fields(self) -> dict[str, float | int | str]:
        return {"lift": self.lift, "lift_ci_low": self.low, "lift_ci_high": self.high,
                "lift_confidence": self.confidence, "test_queries": self.test_queries}


def paired_bootstrap(differences: list[float], confidence: float, resamples: int, seed: int = 0,
                     items: list[list[str]] | None = None) -> tuple[float, float]:
    """Percentile interval of the mean of the per-query ``differences``.

    Queries are resampled (Poisson(1) weights, the bootstrap's large-sample form). With ``items``
    (each query's relevant item ids) the items several queries share are resampled too, independently:
    the two-way ("pigeonhole") bootstrap. Queries that share relevant items are not independent evidence — a
    starting model that happens to rank a few items badly loses on every query that wants them, and
    any change looks like a lift on all of them at once — and a query-only bootstrap would take that
    shared luck for significance.
    """
    import numpy as np

    n = len(differences)
    if n == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    values = np.asarray(differences, dtype=float)
    query_weights = rng.poisson(1.0, size=(resamples, n)).astype(float)
    if items:
        # Only items that several queries want are resampled: an item of one query only is already
        # resampled with that query, and weighting it twice would just widen the interval.
        counts: dict[str, int] = {}
        for found in items:
            for item in set(found):
                counts[item] = counts.get(item, 0) + 1
        shared = sorted(item for item, count in counts.items() if count > 1)
        if shared:
            vocabulary = {item: index for index, item in enumerate(shared)}
            item_weights = rng.poisson(1.0, size=(resamples, len(vocabulary))).astype(float)
            per_query = np.ones((resamples, n))
            for column, found in enumerate(items):
                columns = [vocabulary[i] for i in found if i in vocabulary]
                if columns:
                    # The query's own unshared items keep weight one beside the resampled shared ones.
                    unshared = len(found) - len(columns)
                    per_query[:, column] = (item_weights[:, columns].sum(axis=1) + unshared) / len(found)
            query_weights *= per_query
    totals = query_weights.sum(axis=1)
    means = np.where(totals > 0, (query_weights * values).sum(axis=1) / np.maximum(totals, 1e-12), 0.0)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def judge(base: PerQuery, tuned: PerQuery, metric: str, gate: GateSettings,
          relevant: dict[str, list[str]] | None = None) -> Judgement:
    """Decide on the per-query measures of the starting and the tuned model on the test queries;
    ``relevant`` (query → its relevant item ids) makes the bootstrap resample items too."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    keys = sorted(k for k in base if metric in base[k] and k in tuned and metric in tuned[k])
    n = len(keys)
    base_mean = sum(base[k][metric] for k in keys) / n if n else 0.0
    tuned_mean = sum(tuned[k][metric] for k in keys) / n if n else 0.0
    differences = [sign * (tuned[k][metric] - base[k][metric]) for k in keys]
    lift = sum(differences) / n if n else 0.0
    items = [sorted(relevant.get(k, ())) for k in keys] if relevant is not None else None
    low, high = paired_bootstrap(differences, gate.confidence, gate.resamples, gate.seed, items)
    guard_keys = [k for k in keys if gate.guard_metric in base[k] and gate.guard_metric in tuned[k]]
    guard_lift = (sum(tuned[k][gate.guard_metric] - base[k][gate.guard_metric] for k in guard_keys) / len(guard_keys)
                  if guard_keys and gate.guard_metric != metric else None)
    if n < gate.min_test_queries:
        reason = f"{n} held-out queries, at least {gate.min_test_queries} needed"
    elif high < 0.0:
        reason = f"the tuned model is worse: its {gate.confidence:.0%} interval of the lift ends at {high:+.4f}"
    elif low <= 0.0:
        reason = f"the lift is not significant: its {gate.confidence:.0%} interval reaches {low:+.4f}"
    elif lift < gate.min_effect:
        reason = f"the lift {lift:+.4f} is below the minimum effect {gate.min_effect:+.4f}"
    elif guard_lift is not None and guard_lift < -gate.guard_tolerance:
        reason = f"{gate.guard_metric} fell by {-guard_lift:.4f}, more than the tolerance {gate.guard_tolerance:.4f}"
    else:
        reason = "significant lift"
    return Judgement(metric, base_mean, tuned_mean, lift, low, high, gate.confidence, n, gate.guard_metric,
                     guard_lift, reason == "significant lift", reason)
