"""The trainer as operators and downstream services see it, on the real broker, store and MLflow:
commands and closed batches in, task statuses and model-ready events out."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from schemas.batches import BatchClosed
from schemas.base import utc_now
from schemas.tasks import CancelTask, CreateTask, RestartTask, TaskState
from tests.fixtures.trainer import TrainerHarness, clickstream_batch, start_trainer
from trainer.serving import load_model
from trainer.task_store import TaskStore
from trainer.tracking import iteration_experiment_name


def create(harness: TrainerHarness, method: str, batch_id: str | None, key: str) -> None:
    command = CreateTask(fine_tuning_method=method, batch_id=batch_id, idempotency_key=key)
    harness.send(harness.topics.commands.name, command, key)


def by_key(key: str):
    return lambda status: status.idempotency_key == key


def test_a_closed_batch_becomes_a_better_model_announced_and_loadable(trainer_harness: TrainerHarness):
    harness = trainer_harness
    harness.add_batch("batch-a", clickstream_batch("a", 240))  # enough test queries for a significant lift
    closed = harness.store.get_batch("batch-a")
    harness.send(harness.topics.batches.name, BatchClosed(
        batch_id="batch-a", session_count=closed.session_count, opened_at=closed.opened_at,
        closed_at=closed.closed_at, close_reason="size"), "batch-a")

    final = harness.final_status(lambda s: s.batch_id == "batch-a")
    assert final.status == TaskState.done, final.detail
    assert final.detail.startswith("better model")
    states = [s.status for s in harness.statuses.events if s.task_id == final.task_id]
    assert states[0] == TaskState.pending and TaskState.processing in states
    seqs = [s.seq for s in harness.statuses.events if s.task_id == final.task_id]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    trials = {s.progress.trial for s in harness.statuses.events if s.task_id == final.task_id}
    assert {1, 2} <= trials

    (ready,) = harness.models.wait(lambda events: [e for e in events if e.task_id == final.task_id], what="ModelReady")
    assert ready.batch_id == "batch-a" and ready.model_uri.startswith("runs:/")
    assert ready.metrics[ready.main_metric] > ready.baseline_metrics[ready.main_metric]
    vectors = load_model(ready.model_uri, harness.settings.mlflow_tracking_uri).encode(["apple red", "tiger"])
    assert vectors.shape == (2, ready.embedding_dim)

    client = MlflowClient(harness.settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(iteration_experiment_name("Tiny Method", "batch-a"))
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    # The first trial trains the grid's first choices (Tiny Method lists 1e-3 first; its seeded sampler would
    # have drawn 5e-4), the second explores the rest.
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    assert (float(first.data.params["query_lr"]), float(second.data.params["query_lr"])) == (1e-3, 5e-4)
    kept = [r for r in runs if r.data.tags.get("es.model") == "uploaded"]
    assert [r.info.run_id for r in kept] == [ready.run_id]


def test_with_refit_on_the_announced_model_is_the_chosen_trial_trained_again_with_its_validation_queries(
        kafka_bootstrap, mlflow_uri, tmp_path, test_plugins_path, tiny_model_path):
    harness = start_trainer(kafka_bootstrap, mlflow_uri, tmp_path / "es", test_plugins_path, tiny_model_path,
                            train_refit=True, default_fine_tuning_method="Refit Method")
    try:
        harness.add_batch("batch-r", clickstream_batch("r", 240))
        create(harness, "Refit Method", "batch-r", "refit")
        final = harness.final_status(by_key("refit"))
        assert final.status == TaskState.done and final.detail.startswith("better model"), final.detail
        (ready,) = harness.models.wait(lambda events: [e for e in events if e.task_id == final.task_id],
                                       what="ModelReady")
        assert "refitting" in {s.progress.stage for s in harness.statuses.events if s.task_id == final.task_id}

        client = MlflowClient(harness.settings.mlflow_tracking_uri)
        experiment = client.get_experiment_by_name(iteration_experiment_name("Refit Method", "batch-r"))
        runs = client.search_runs([experiment.experiment_id])
        (refit_run,) = [r for r in runs if "es.refit_of" in r.data.tags]
        chosen = next(r for r in runs if r.info.run_id == refit_run.data.tags["es.refit_of"])
        assert refit_run.data.params == chosen.data.params
        assert refit_run.data.metrics["train_triples"] > chosen.data.metrics["train_triples"]
        assert refit_run.data.metrics["epochs"] == chosen.data.metrics["best_epoch"] + 1
        # It is the one model kept, and the one announced.
        kept = [r for r in runs if r.data.tags.get("es.model") == "uploaded"]
        assert [r.info.run_id for r in kept] == [ready.run_id] == [refit_run.info.run_id]
    finally:
        harness.close()


def test_every_bad_task_ends_in_error_with_a_readable_reason(trainer_harness: TrainerHarness):
    harness = trainer_harness
    harness.store.open_batch("batch-empty", utc_now())
    harness.store.close_batch("batch-empty", utc_now(), "age")
    harness.add_batch("batch-open", clickstream_batch("open", 10), close=False)
    harness.add_batch("batch-b", clickstream_batch("b", 40))
    cases = {
        "unknown": ("No Such Method", "batch-b", ["unknown fine-tuning method 'No Such Method'",
                                                  "Tiny Method", "broken_method.py"]),
        "missing": ("Tiny Method", "batch-nowhere", ["'batch-nowhere' does not exist"]),
        "empty": ("Tiny Method", "batch-empty", ["holds no sessions"]),
        "open": ("Tiny Method", "batch-open", ["still open"]),
        "raising": ("Raising Method", "batch-b", ["'Raising Method' failed in get_fine_tuning_builder",
                                                  "RuntimeError: the catalog service is down"]),
    }
    for key, (method, batch_id, _) in cases.items():
        create(harness, method, batch_id, key)
    for key, (_, _, expected) in cases.items():
        final = harness.final_status(by_key(key))
        assert final.status == TaskState.error, (key, final.detail)
        for text in expected:
            assert text in final.detail, (key, final.detail)


def test_the_same_idempotency_key_always_yields_the_same_task(trainer_harness: TrainerHarness):
    harness = trainer_harness
    for _ in range(3):
        create(harness, "Tiny Method", "batch-nowhere", "once")
    create(harness, "Tiny Method", "batch-nowhere", "marker")
    harness.final_status(by_key("marker"))
    task_ids = {s.task_id for s in harness.statuses.events if s.idempotency_key == "once"}
    assert len(task_ids) == 1
    created = [s for s in harness.statuses.events if s.idempotency_key == "once" and s.status == TaskState.pending]
    assert len(created) == 1


def test_cancel_stops_a_running_fine_tune_within_seconds(trainer_harness: TrainerHarness):
    harness = trainer_harness
    harness.add_batch("batch-slow", clickstream_batch("slow"))
    create(harness, "Slow Method", "batch-slow", "slow")
    running = harness.statuses.wait(
        lambda events: next((e for e in events if e.idempotency_key == "slow" and e.progress.stage == "training"
                             and e.progress.step > 0), None), 240, "training to start")
    asked = time.monotonic()
    harness.send(harness.topics.commands.name, CancelTask(task_id=running.task_id), running.task_id)
    final = harness.final_status(by_key("slow"), timeout_s=30)
    assert final.status == TaskState.canceled
    assert time.monotonic() - asked < 10


def test_restart_runs_a_failed_task_again(trainer_harness: TrainerHarness):
    harness = trainer_harness
    create(harness, "Tiny Method", "batch-late", "late")
    failed = harness.final_status(by_key("late"))
    assert failed.status == TaskState.error
    harness.add_batch("batch-late", clickstream_batch("late", 40))
    harness.send(harness.topics.commands.name, RestartTask(task_id=failed.task_id), failed.task_id)
    final = harness.statuses.wait(
        lambda events: next((e for e in events if e.task_id == failed.task_id and e.seq > failed.seq
                             and e.status.is_final), None), 240, "the restarted task to finish")
    assert final.status == TaskState.done, final.detail


def test_a_task_left_processing_by_a_dead_trainer_runs_again_after_restart(
        kafka_bootstrap, mlflow_uri, tmp_path, test_plugins_path, tiny_model_path):
    data_dir = tmp_path / "es"
    (data_dir / "trainer").mkdir(parents=True)
    tasks = TaskStore(data_dir / "trainer" / "tasks.sqlite")
    task, _ = tasks.create("Tiny Method", "batch-gone", {}, "orphan")
    tasks.update(task, status=TaskState.processing)
    tasks.close()

    harness = start_trainer(kafka_bootstrap, mlflow_uri, data_dir, test_plugins_path, tiny_model_path)
    try:
        final = harness.final_status(by_key("orphan"))
        assert final.status == TaskState.error and "does not exist" in final.detail
        assert any(s.status == TaskState.pending and "restarted" in (s.detail or "")
                   for s in harness.statuses.events if s.task_id == task.task_id)
    finally:
        harness.close()
