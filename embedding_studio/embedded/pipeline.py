"""Driving the whole pipeline from the outside, as a search product and an operator would.

``PipelineDriver`` sends sessions with the producer SDK, waits until the stream worker has stored
them and closed their batch (releasing the batch itself when it would not fill), follows the task
the trainer creates for that batch through its status events, and waits for its ``ModelReady``.
It only talks to the system through Kafka and the session store, so it works the same against an
``EmbeddedSystem`` and against a deployment named by settings. The demo and the quality bench use it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from messaging import ConfirmedProducer, EventReader, KafkaCluster, NotDelivered
from schemas.base import Contract
from schemas.models import ModelReady
from schemas.sessions import BatchRecord, BatchStatus
from schemas.settings import Settings
from schemas.tasks import ReleaseBatch, TaskState, TaskStatus

class PipelineError(RuntimeError):
    """The pipeline did not get where it was asked to: a part died, a task failed, or time ran out."""


@dataclass
class PipelineOutcome:
    """What one round through the pipeline produced."""

    session_ids: list[str]
    batch: BatchRecord
    status: TaskStatus  # the task's final status
    model_ready: ModelReady | None  # None when no parameter set beat the starting model
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.status.task_id


class PipelineDriver:
    """``with PipelineDriver(system.settings, problems=system.problems) as driver: driver.run(sessions)``

    ``problems()`` lists parts that died (``EmbeddedSystem.problems``): waiting stops at once with
    them instead of running into a timeout. ``say(line)`` reports progress (print by default).
    """

    def __init__(self, settings: Settings, *, problems: Callable[[], list[str]] | None = None,
                 say: Callable[[str], None] | None = None):
        if not settings.kafka_bootstrap:
            raise ValueError("the pipeline driver needs settings naming a Kafka cluster (kafka_bootstrap)")
        self.settings = settings
        self.cluster = KafkaCluster.from_settings(settings)
        self.topics = settings.topics()
        self.problems = problems or (lambda: [])
        self.say = say or (lambda line: print(line, flush=True))
        self.statuses = EventReader(self.cluster, self.topics.task_status.name, TaskStatus)
        self.models = EventReader(self.cluster, self.topics.model_ready.name, ModelReady)

    def __enter__(self) -> PipelineDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.statuses.close()
        self.models.close()

    # --- the whole round ---------------------------------------------------------------------
    def run(self, sessions: Sequence[Sequence[Contract]], *, batch_timeout_s: float = 300.0,
            task_timeout_s: float = 3600.0, on_status: Callable[[TaskStatus], None] | None = None) -> PipelineOutcome:
        """Send ``sessions`` (each a list of clickstream events), then wait for their batch, the task
        training it and its model; raises PipelineError when the task ends in error or is canceled."""
        timings: dict[str, float] = {}
        started = time.monotonic()
        session_ids = self.send(sessions)
        timings["send_s"] = time.monotonic() - started
        mark = time.monotonic()
        batch = self.wait_for_batch(session_ids, timeout_s=batch_timeout_s)
        timings["batch_s"] = time.monotonic() - mark
        mark = time.monotonic()
        status = self.wait_for_task(batch.batch_id, timeout_s=task_timeout_s, on_status=on_status)
        timings["task_s"] = time.monotonic() - mark
        if status.status == TaskState.error:
            raise PipelineError(f"fine-tuning task {status.task_id} failed: {status.detail or 'no detail given'}")
        if status.status == TaskState.canceled:
            raise PipelineError(f"fine-tuning task {status.task_id} was canceled")
        model = self.wait_for_model(status.task_id, timeout_s=30.0) if _announced(status) else None
        timings["total_s"] = time.monotonic() - started
        return PipelineOutcome(session_ids, batch, status, model, timings)

    # --- the steps ---------------------------------------------------------------------------
    def send(self, sessions: Sequence[Sequence[Contract]]) -> list[str]:
        """Every session's events through the producer SDK; returns the session ids in order."""
        from ingest.producer import ClickstreamProducer

        session_ids = []
        with ClickstreamProducer(self.cluster, self.topics, config={"client.id": "embedding-studio-pipeline"}) as producer:
            for events in sessions:
                producer.send_many(events)
                session_ids.append(events[0].session_id)
            producer.flush(60)
        return session_ids

    def wait_for_batch(self, session_ids: Sequence[str], *, timeout_s: float = 300.0,
                       release_after_s: float | None = None) -> BatchRecord:
        """The closed batch holding the last of ``session_ids``, once all of them are stored.

        Sessions are stored as the stream worker closes them; when all are in and their batch is
        still open (it is not full yet), or when nothing new has arrived for ``release_after_s``
        (default: three inactivity gaps or 20 s, whichever is more), the batch is released with a
        ReleaseBatch command so that training starts on what is there.
        """
        from session_store import open_store

        if not session_ids:
            raise ValueError("no sessions to wait for")
        quiet_s = release_after_s if release_after_s is not None else max(20.0, 3 * self.settings.session_gap_s)
        deadline = time.monotonic() + timeout_s
        pending = list(session_ids)
        stored: dict[str, str] = {}  # session id -> batch id
        last_progress = time.monotonic()
        released: str | None = None
        all_stored_at: float | None = None
        reported = 0
        with open_store(self.settings.resolved_store_url()) as store:
            while True:
                self._check_parts()
                still = []
                for session_id in pending:
                    found = store.get_session(session_id)
                    if found is None:
                        still.append(session_id)
                    else:
                        stored[session_id] = found.batch_id
                if len(still) < len(pending):
                    last_progress = time.monotonic()
                pending = still
                if len(stored) - reported >= max(1, len(session_ids) // 4) or (not pending and reported < len(stored)):
                    self.say(f"  {len(stored)} of {len(session_ids)} sessions stored")
                    reported = len(stored)
                target = stored.get(session_ids[-1]) if not pending else None
                if target is not None:
                    batch = store.get_batch(target)
                    if batch is not None and batch.status == BatchStatus.closed:
                        return batch
                    # A full batch closes by itself a moment after its last session is stored.
                    all_stored_at = all_stored_at or time.monotonic()
                    if released is None and time.monotonic() - all_stored_at > 3.0:
                        self.say("  every session is stored and the batch is not full: releasing it")
                        released = self.release_batch()
                elif pending and time.monotonic() - last_progress > quiet_s and released is None:
                    self.say(f"  {len(pending)} session(s) not stored after {quiet_s:.0f} s of quiet; "
                             "releasing the open batch")
                    released = self.release_batch()
                    if stored:
                        target = stored[max(stored, key=session_ids.index)]
                        batch = store.get_batch(target)
                        if batch is not None and batch.status == BatchStatus.closed:
                            return batch
                if time.monotonic() > deadline:
                    raise PipelineError(f"timed out after {timeout_s:.0f} s waiting for the batch: "
                                        f"{len(stored)} of {len(session_ids)} sessions stored")
                time.sleep(0.3)

    def release_batch(self) -> str:
        """Ask the stream worker to close the open batch now; returns the release id."""
        command = ReleaseBatch(release_id=f"pipeline-{uuid.uuid4().hex[:12]}")
        with ConfirmedProducer(self.cluster, max_message_bytes=self.topics.max_message_bytes,
                               client_id="embedding-studio-pipeline") as producer:
            try:
                producer.send(self.topics.commands.name, command.release_id, command.model_dump_json().encode(),
                              what="the release command")
            except NotDelivered as error:
                raise PipelineError(f"could not send the release command to the commands topic: {error}") from error
        return command.release_id

    def wait_for_task(self, batch_id: str, *, timeout_s: float = 3600.0,
                      on_status: Callable[[TaskStatus], None] | None = None) -> TaskStatus:
        """The final status of the task that trains ``batch_id`` (the newest such task)."""
        deadline = time.monotonic() + timeout_s
        latest: dict[str, TaskStatus] = {}
        seen = 0
        while time.monotonic() < deadline:
            self._check_parts()
            self.statuses.poll()
            for event in self.statuses.events[seen:]:
                if event.batch_id != batch_id:
                    continue
                previous = latest.get(event.task_id)
                if previous is not None and event.seq <= previous.seq:
                    continue
                latest[event.task_id] = event
                if on_status is not None:
                    on_status(event)
            seen = len(self.statuses.events)
            if latest:
                newest = max(latest.values(), key=lambda s: s.created_at)
                if newest.status.is_final:
                    return newest
        raise PipelineError(f"timed out after {timeout_s:.0f} s waiting for the task of batch {batch_id}")

    def wait_for_model(self, task_id: str, *, timeout_s: float = 30.0) -> ModelReady:
        deadline = time.monotonic() + timeout_s
        while True:
            found = next((m for m in self.models.events if m.task_id == task_id), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise PipelineError(f"task {task_id} reported a better model but no ModelReady arrived "
                                    f"in {timeout_s:.0f} s")
            self.models.poll()

    def _check_parts(self) -> None:
        problems = self.problems()
        if problems:
            raise PipelineError("; ".join(problems))


def _announced(status: TaskStatus) -> bool:
    """A done task announced a model unless it said that nothing beat the starting model."""
    return status.status == TaskState.done and "nothing announced" not in (status.detail or "")


def trial_histories(tracking_uri: str, model_ready_or_batch: ModelReady | str, method: str | None = None,
                    metric: str = "val_ndcg_at_10") -> dict[str, list[tuple[int, float]]]:
    """Each trial's validation curve of ``metric`` (run name → [(step, value)]), from MLflow, for the
    iteration that trained a batch (given its ModelReady, or its batch id and method)."""
    from mlflow.tracking import MlflowClient

    from trainer.tracking import iteration_experiment_name

    if isinstance(model_ready_or_batch, ModelReady):
        name = iteration_experiment_name(model_ready_or_batch.fine_tuning_method, model_ready_or_batch.batch_id)
    else:
        if method is None:
            raise ValueError("give the method with a batch id")
        name = iteration_experiment_name(method, model_ready_or_batch)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return {}
    curves = {}
    for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]):
        history = client.get_metric_history(run.info.run_id, metric)
        points = sorted({(m.step, m.value) for m in history})
        if points:
            curves[run.info.run_name or run.info.run_id] = points
    return curves


def trial_baseline(tracking_uri: str, model_ready: ModelReady, metric: str = "val_ndcg_at_10") -> float | None:
    """The starting model's score on the validation queries the trial curves are drawn on (every run of
    an iteration logs it as ``baseline_<metric>``); ModelReady's own baseline is a test-query figure."""
    from mlflow.tracking import MlflowClient

    from trainer.tracking import iteration_experiment_name

    client = MlflowClient(tracking_uri)
    name = iteration_experiment_name(model_ready.fine_tuning_method, model_ready.batch_id)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None
    for run in client.search_runs([experiment.experiment_id], max_results=20):
        value = run.data.metrics.get(f"baseline_{metric}")
        if value is not None:
            return value
    return None


def quiet_output() -> None:
    """Keep the terminal for the story and the training progress bars: no INFO logs (unless
    ES_LOG_LEVEL asks for them), no MLflow run links or download bars, no model-loading bars."""
    import logging
    import os

    if "ES_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def download_model(ready: ModelReady, tracking_uri: str, destination: Path) -> Path:
    """The announced model's SentenceTransformer folder, downloaded under ``destination``."""
    import mlflow.artifacts

    destination.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=ready.model_uri, dst_path=str(destination),
                                                    tracking_uri=tracking_uri))
