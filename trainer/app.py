"""Assembles a trainer from settings: task store, session store, MLflow tracker, publisher, executor.

Used by ``embedding-studio trainer``, the embedded runtime and the tests, so all three run the same
wiring.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from messaging import KafkaCluster
from schemas.settings import Settings
from session_store import open_store
from session_store.base import SessionStore
from trainer.iteration import IterationRunner
from trainer.publisher import TaskEventPublisher
from trainer.service import TaskService
from trainer.task_store import TaskStore
from trainer.tracking import ExperimentTracker


class TrainerConfigError(ValueError):
    """A setting the trainer cannot run without is missing."""


@dataclass
class Trainer:
    service: TaskService
    tasks: TaskStore
    sessions: SessionStore
    publisher: TaskEventPublisher

    def run(self, stop: threading.Event | None = None) -> None:
        try:
            self.service.run(stop)
        finally:
            self.close()

    def close(self) -> None:
        self.publisher.close()
        self.tasks.close()
        self.sessions.close()


def build_trainer(
    settings: Settings,
    *,
    bootstrap: str | None = None,
    tracking_uri: str | None = None,
    training_overrides: dict | None = None,
    release_timeout_s: float = 120.0,
) -> Trainer:
    bootstrap = bootstrap or settings.kafka_bootstrap
    tracking_uri = tracking_uri or settings.mlflow_tracking_uri
    if not bootstrap:
        raise TrainerConfigError("the trainer needs a Kafka cluster: set ES_KAFKA_BOOTSTRAP")
    if not tracking_uri:
        raise TrainerConfigError("the trainer needs an MLflow server: set ES_MLFLOW_TRACKING_URI")
    trainer_dir = Path(settings.data_dir) / "trainer"
    trainer_dir.mkdir(parents=True, exist_ok=True)
    tasks = TaskStore(trainer_dir / "tasks.sqlite")
    sessions = open_store(settings.resolved_store_url())
    cluster = KafkaCluster.from_settings(settings, bootstrap)
    publisher = TaskEventPublisher(cluster, settings.topics())
    runner = IterationRunner(
        settings, sessions, ExperimentTracker(tracking_uri), publisher.model_ready, trainer_dir / "work",
        training_overrides=training_overrides,
    )
    service = TaskService(settings, cluster, tasks, sessions, publisher, runner, release_timeout_s=release_timeout_s)
    return Trainer(service, tasks, sessions, publisher)
