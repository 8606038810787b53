"""MLflow bookkeeping against a real MLflow server: the initial model is stored once, iterations are
experiments with a run per parameter set, and only the best model of an iteration is kept."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from trainer.tracking import INITIAL_EXPERIMENT, ExperimentTracker, iteration_experiment_name


def _model_dir(tmp_path: Path, content: str) -> Path:
    directory = tmp_path / uuid.uuid4().hex
    directory.mkdir()
    (directory / "model.safetensors").write_text(content)
    (directory / "config.json").write_text("{}")
    return directory


@pytest.fixture
def tracker(mlflow_uri) -> ExperimentTracker:
    return ExperimentTracker(mlflow_uri).for_method(f"method-{uuid.uuid4().hex[:6]}")


def test_each_method_has_its_own_initial_model(tracker, tmp_path):
    other = tracker.for_method(tracker.method + "-other")
    mine = tracker.upload_initial_model(_model_dir(tmp_path, "mine"))
    theirs = other.upload_initial_model(_model_dir(tmp_path, "theirs"))

    assert mine != theirs
    assert tracker.initial_model() == mine and other.initial_model() == theirs


def test_the_initial_model_is_uploaded_once(tracker, tmp_path):
    first = tracker.upload_initial_model(_model_dir(tmp_path, "v1"))
    second = tracker.upload_initial_model(_model_dir(tmp_path, "v2"))

    assert first == second == tracker.initial_model()
    assert tracker.client.get_experiment(first.experiment_id).name == INITIAL_EXPERIMENT
    downloaded = tracker.download_model(first.run_id, tmp_path / "back")
    assert (downloaded / "model.safetensors").read_text() == "v1"


def test_superseded_models_are_deleted_and_the_best_is_kept(tracker, tmp_path):
    method = f"method-{uuid.uuid4().hex[:6]}"
    experiment_id = tracker.experiment_id(iteration_experiment_name(method, "batch-1"))
    runs = []
    for params_id, score in (("p-low", 0.2), ("p-high", 0.8)):
        run = tracker.start_run(experiment_id, params_id, {"margin": "0.1"}, {"es.method": method})
        tracker.log_metrics(run.run_id, {"test_ndcg_at_10": score}, step=0)
        tracker.log_model(run.run_id, _model_dir(tmp_path, params_id))
        tracker.end_run(run.run_id)
        runs.append(run)

    best = tracker.best_run(experiment_id, "test_ndcg_at_10")
    assert best.info.run_id == runs[1].run_id

    tracker.delete_model(runs[0].run_id)

    assert tracker.client.list_artifacts(runs[0].run_id) == []
    assert tracker.client.get_run(runs[0].run_id).data.params == {"margin": "0.1"}  # history stays
    assert tracker.find_run(experiment_id, "p-high").info.run_id == runs[1].run_id
    assert tracker.latest_model(method).run_id == runs[1].run_id
    assert tracker.latest_model(method, exclude_experiment=experiment_id) is None


def test_a_rejected_model_is_kept_and_found_by_its_task_but_never_continued_from(tracker, tmp_path):
    method = f"method-{uuid.uuid4().hex[:6]}"
    experiment_id = tracker.experiment_id(iteration_experiment_name(method, "batch-1"))
    kept = tracker.start_run(experiment_id, "p-kept", {}, {"es.method": method, "es.task_id": "task-old"})
    tracker.log_model(kept.run_id, _model_dir(tmp_path, "announced earlier"))
    tracker.end_run(kept.run_id)
    later = tracker.experiment_id(iteration_experiment_name(method, "batch-2"))
    turned_down = tracker.start_run(later, "p-new", {}, {"es.method": method, "es.task_id": "task-new"})
    tracker.log_model(turned_down.run_id, _model_dir(tmp_path, "not better"))
    tracker.end_run(turned_down.run_id)

    tracker.reject_model(turned_down.run_id)

    assert tracker.rejected_model("task-new").run_id == turned_down.run_id
    assert tracker.rejected_model("task-old") is None
    assert [a.path for a in tracker.client.list_artifacts(turned_down.run_id)] == ["model"]
    assert tracker.latest_model(method).run_id == kept.run_id
