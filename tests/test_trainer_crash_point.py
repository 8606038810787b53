"""A trainer SIGKILLed between a kept model's upload and its ModelReady announces that model exactly
once after a restart, and its task ends done.

The real ``embedding-studio trainer`` process, on the session's tansu broker and MLflow server, a
SQLite session store and the tiny test model; the kill is the named crash point
``trainer.before_model_ready`` (schemas/faults.py), not a timed guess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from messaging.topics import ensure_topics
from schemas.base import utc_now
from schemas.batches import BatchClosed
from schemas.models import ModelReady
from schemas.settings import Settings
from schemas.tasks import TaskState, TaskStatus
from session_store import open_store
from tests.fixtures.trainer import Feed, clickstream_batch
from trainer.task_store import TaskStore
from trainer.tracking import iteration_experiment_name

pytestmark = pytest.mark.slow

TRAINER = [sys.executable, "-c", "import sys; from embedding_studio.cli import main; sys.exit(main())", "trainer"]


def _trainer(env: dict[str, str], log: Path, crash_at: str | None = None) -> subprocess.Popen:
    env = dict(env)
    if crash_at:
        env["ES_FAULT_CRASH_AT"] = crash_at
    return subprocess.Popen(TRAINER, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_a_trainer_killed_before_model_ready_announces_the_model_once_after_restart(
        kafka_bootstrap, mlflow_uri, tmp_path, test_plugins_path, tiny_model_path):
    data_dir = tmp_path / "es"
    data_dir.mkdir()
    values = {
        "ES_KAFKA_BOOTSTRAP": kafka_bootstrap, "ES_MLFLOW_TRACKING_URI": mlflow_uri, "ES_DATA_DIR": str(data_dir),
        "ES_STORE_URL": f"sqlite:///{data_dir / 'sessions.db'}", "ES_PLUGINS_PATH": str(test_plugins_path),
        "ES_BASE_MODEL": str(tiny_model_path), "ES_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        # Its own method: no other test's model is where this iteration starts.
        "ES_DEFAULT_FINE_TUNING_METHOD": "Crash Point Method", "ES_TRAIN_TRIALS": "1",
        "ES_STREAM_SESSION_TIMEOUT_S": "2.0", "ES_STREAM_HEARTBEAT_INTERVAL_S": "0.5",
        "ES_GATE_MIN_TEST_QUERIES": "10", "ES_TRAIN_REFIT": "true",  # the restart must reuse the refit too
    }
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ES_")}, **values}
    settings = Settings(**{k[3:].lower(): v for k, v in values.items()})
    topics = settings.topics()
    ensure_topics(kafka_bootstrap, topics)
    store = open_store(settings.resolved_store_url())
    store.open_batch("batch-k", utc_now())
    store.put_sessions("batch-k", clickstream_batch("k", 240))  # enough test queries for a significant lift
    closed = store.close_batch("batch-k", utc_now(), "size")
    store.close()
    statuses = Feed(kafka_bootstrap, topics.task_status.name, TaskStatus)
    models = Feed(kafka_bootstrap, topics.model_ready.name, ModelReady)
    log = tmp_path / "trainer.log"

    first = _trainer(env, log, crash_at="trainer.before_model_ready")
    second = None
    try:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
        producer.produce(topics.batches.name, key=b"batch-k", value=BatchClosed(
            batch_id="batch-k", session_count=closed.session_count, opened_at=closed.opened_at,
            closed_at=closed.closed_at, close_reason="size").model_dump_json().encode())
        assert producer.flush(10) == 0

        assert first.wait(240) == -9, log.read_text()
        assert "crash point trainer.before_model_ready reached: SIGKILL" in log.read_text()
        statuses.poll()
        models.poll()
        assert models.events == [], "the model was announced before the crash point"
        (task_id,) = {s.task_id for s in statuses.events if s.batch_id == "batch-k"}
        assert not any(s.status.is_final for s in statuses.events if s.task_id == task_id)

        second = _trainer(env, log)
        final = statuses.wait(lambda events: next((e for e in reversed(events) if e.task_id == task_id
                                                   and e.status.is_final), None), 240, "the task to end")
        assert final.status == TaskState.done and final.detail.startswith("better model"), final.detail
        models.wait(lambda events: events, 30, "the ModelReady")
        _stop(second)  # nothing more can be published: every ModelReady there will ever be is on the topic
        models.poll()
        assert [m.task_id for m in models.events] == [task_id]
        (ready,) = models.events
        assert ready.batch_id == "batch-k"
        # The restart reused the refit trained before the crash instead of training it again.
        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow_uri)
        experiment = client.get_experiment_by_name(iteration_experiment_name("Crash Point Method", "batch-k"))
        refits = [r for r in client.search_runs([experiment.experiment_id]) if "es.refit_of" in r.data.tags]
        assert [r.info.run_id for r in refits] == [ready.run_id]

        statuses.poll()
        mine = [s for s in statuses.events if s.task_id == task_id]
        assert mine[-1] == final and [s for s in mine if s.status.is_final] == [final]
        seqs = [s.seq for s in mine]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        tasks = TaskStore(data_dir / "trainer" / "tasks.sqlite")
        try:
            stored = tasks.get(task_id)
            assert stored.status == TaskState.done and stored.seq == final.seq
            assert stored.model_uri == ready.model_uri
        finally:
            tasks.close()
    finally:
        _stop(first)
        if second is not None:
            _stop(second)
        statuses.close()
        models.close()
