"""The trainer service: the consume loop of task commands and batch-closed events.

Three parts, one job each: this loop reads the commands and batches topics (``messaging``'s
handle-then-commit loop) and hands each record to the state machine (``task_states.TaskStates``),
which keeps every task's state; the fine-tune thread (``task_worker.TaskWorker``) runs one pending
task at a time. The loop never blocks on training, so a cancel arrives while a task runs and stops
it within seconds. Every handler is idempotent and offsets are committed after handling, so a
redelivered message changes nothing. On start, tasks a dead trainer left in ``processing`` go back
to ``pending`` and run again (finished MLflow runs of that task are reused, not retrained).
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Message

from messaging import CommittingConsumer, KafkaCluster
from schemas.base import ContractError
from schemas.batches import BatchClosed
from schemas.dead_letters import dead_letter_headers
from schemas.settings import Settings
from schemas.tasks import parse_task_command
from session_store.base import SessionStore
from trainer.publisher import TaskEventPublisher
from trainer.task_control import Executor, TaskCanceled, TaskControl, TaskFailed
from trainer.task_states import TaskStates
from trainer.task_store import TaskStore
from trainer.task_worker import ReleaseWaiter, TaskWorker

__all__ = ["Executor", "TaskCanceled", "TaskControl", "TaskFailed", "TaskService", "TrainerWorkerDied"]

log = logging.getLogger(__name__)


class TrainerWorkerDied(RuntimeError):
    """The fine-tune thread ended on an error: queued tasks would never run, so the trainer stops."""


class TaskService:
    def __init__(
        self,
        settings: Settings,
        cluster: KafkaCluster | str,
        tasks: TaskStore,
        sessions: SessionStore,
        publisher: TaskEventPublisher,
        executor: Executor,
        consumer_config: dict | None = None,
        release_timeout_s: float = 120.0,
    ):
        self.settings = settings
        self.topics = settings.topics()
        self.tasks = tasks
        self.publisher = publisher
        self.states = TaskStates(settings, tasks, publisher)
        self.releases = ReleaseWaiter()
        self.worker = TaskWorker(self.states, executor, sessions, publisher, self.releases,
                                 release_timeout_s=release_timeout_s)
        self.consumer = CommittingConsumer(cluster, f"{self.topics.prefix}.trainer",
                                           [self.topics.commands.name, self.topics.batches.name],
                                           # tansu holds a group join for about half the session
                                           # timeout: the stream workers' short one suits.
                                           session_timeout_s=settings.stream_session_timeout_s,
                                           heartbeat_interval_s=settings.stream_heartbeat_interval_s,
                                           extra_config=consumer_config)

    @property
    def worker_error(self) -> BaseException | None:
        return self.worker.error

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        self.states.stopping = stop
        self.states.recover()
        self.worker.start()
        log.info("trainer consuming %s and %s", self.topics.commands.name, self.topics.batches.name)
        try:
            self.consumer.run(self.handle, stop, between=self._check_worker)
        finally:
            stop.set()
            self.worker.join(30)
            self.publisher.flush()

    def _check_worker(self) -> None:
        if not self.worker.is_alive():
            raise TrainerWorkerDied(f"the fine-tune thread died: {self.worker.error!r}") from self.worker.error

    def handle(self, message: Message) -> None:
        if message.topic() == self.topics.batches.name:
            self._on_batch_closed(message)
            return
        try:
            command = parse_task_command(message.value() or b"")
        except ContractError as error:
            # The stream worker puts it on the commands' dead-letter topic with this reason.
            log.warning("skipped unusable command at offset %s: %s", message.offset(), error.reason)
            return
        self.states.on_command(command)

    def _on_batch_closed(self, message: Message) -> None:
        try:
            closed = BatchClosed.model_validate_json(message.value() or b"")
        except ValueError as error:
            # Kept, with the reason, rather than skipped: the batch it may name is not trained.
            reason = f"unreadable BatchClosed: {error}"
            log.error("%s at offset %s; dead-lettered", reason, message.offset())
            headers = dead_letter_headers(reason, message.topic(), message.partition(), message.offset())
            self.publisher.dead_letter(self.topics.batches_dlq.name, message.key(), message.value(), headers)
            return
        self.releases.arrived(closed)
        self.states.on_batch_closed(closed)
