"""The issue's finding, reproduced on the real trainer (broker, MLflow, store, tiny model): batches
without any signal — random queries, one click per session uniform over the ten shown results —
announce nothing, and say by how much and why; a batch with real signal still announces, with the
lift, its interval and the number of test queries."""

from __future__ import annotations

import random

import pytest

from schemas.sessions import ClosedSession
from schemas.tasks import CreateTask, TaskState
from tests.fixtures.trainer import TrainerHarness, clickstream_batch

WORDS = ("amber basin cedar delta ember fjord grove harbor iris jasper kelp lumen moss nectar onyx prism quill "
         "raven sage tundra umber vale willow xenon yarrow zephyr").split()


def no_signal_batch(prefix: str, n: int, seed: int) -> list[ClosedSession]:
    rng = random.Random(seed)
    items = {f"item-{i}": " ".join(rng.sample(WORDS, 4)) for i in range(60)}
    sessions = []
    for i in range(n):
        shown = rng.sample(sorted(items), 10)
        clicked = rng.choice(shown)
        sessions.append(ClosedSession.model_validate({
            "session_id": f"{prefix}-{i}", "search_query": " ".join(rng.sample(WORDS, 3)), "search_meta": {},
            "search_results": [{"object_id": o, "rank": r, "meta": {"text": items[o]}} for r, o in enumerate(shown, 1)],
            "created_at": "2026-01-01T00:00:00Z",
            "events": [{"event_id": f"{prefix}-{i}-e", "object_id": clicked, "created_at": "2026-01-01T00:00:01Z"}],
            "is_irrelevant": False, "closed_at": "2026-01-01T00:01:00Z", "close_reason": "gap",
        }))
    return sessions


def train(harness: TrainerHarness, batch_id: str, sessions: list[ClosedSession]):
    harness.add_batch(batch_id, sessions)
    command = CreateTask(fine_tuning_method="Gate Method", batch_id=batch_id, idempotency_key=batch_id)
    harness.send(harness.topics.commands.name, command, batch_id)
    return harness.final_status(lambda s: s.idempotency_key == batch_id)


def test_batches_without_signal_announce_nothing_and_one_with_signal_does(trainer_harness: TrainerHarness):
    harness = trainer_harness
    # Seeds 1 and 3: a 95% gate announces about one batch in forty without signal, and seed 2 is one of
    # those tails (its per-query lifts pass a sign-flip test at p = 0.004); the noise matrix below
    # runs twelve seeds and bounds how often it happens.
    for seed in (1, 3):
        final = train(harness, f"noise-{seed}", no_signal_batch(f"noise{seed}", 160, seed))
        assert final.status == TaskState.done, final.detail
        assert final.detail.startswith("no better model: ") and final.detail.endswith("nothing announced")
        assert "test queries" in final.detail and "CI" in final.detail  # by how much, and how sure
        judged = final.judgement
        assert judged is not None and not judged.announced and judged.test_queries >= 30
        assert judged.lift_ci_low <= judged.lift <= judged.lift_ci_high and judged.lift_ci_low <= 0

    final = train(harness, "signal", clickstream_batch("signal", 240))
    assert final.status == TaskState.done and final.detail.startswith("better model: "), final.detail
    ready = harness.models.wait(lambda events: [e for e in events if e.task_id == final.task_id], what="ModelReady")[0]
    assert ready.lift > 0 and 0 < ready.lift_ci_low <= ready.lift <= ready.lift_ci_high
    assert ready.lift_confidence == 0.95 and ready.test_queries >= 10
    assert final.judgement is not None and final.judgement.announced
    assert (final.judgement.lift, final.judgement.test_queries) == (ready.lift, ready.test_queries)
    assert ready.main_metric == "test_cm_ndcg_at_10"
    assert ready.metrics["test_cm_ndcg_at_10"] - ready.baseline_metrics["test_cm_ndcg_at_10"] == \
        pytest.approx(ready.lift, abs=1e-6)
    models = [e for e in harness.models.events if e.batch_id.startswith("noise")]
    assert models == []


def test_a_batch_with_too_few_distinct_queries_ends_done_saying_so(trainer_harness: TrainerHarness):
    # 40 sessions but only 4 distinct queries: nothing to judge a model on.
    sessions = [s.model_copy(update={"search_query": f"query {i % 4}"}) for i, s in
                enumerate(clickstream_batch("few", 40))]
    final = train(trainer_harness, "few", sessions)
    assert final.status == TaskState.done
    assert "held-out queries, at least 10 needed" in final.detail and final.detail.endswith("nothing announced")


@pytest.mark.noise_matrix
def test_at_most_one_of_twelve_batches_without_signal_is_announced(trainer_harness: TrainerHarness):
    # At a 95% two-sided interval the false announcement rate is 2.5% a batch: 0.3 expected in
    # twelve, two or more about one run in twenty-five.
    announced = []
    for seed in range(1, 13):
        final = train(trainer_harness, f"matrix-{seed}", no_signal_batch(f"matrix{seed}", 160, seed))
        assert final.status == TaskState.done, final.detail
        announced += [seed] if final.detail.startswith("better model: ") else []
    assert len(announced) <= 1, announced
