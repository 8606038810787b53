"""The trainer service: consumes task commands and batch-closed events, keeps task state, runs one
fine-tune at a time on a worker thread and publishes every status change.

The consume loop never blocks on training, so a cancel arrives while a task runs and stops it
within seconds. Every handler is idempotent and offsets are committed after handling, so a
redelivered message changes nothing. On start, tasks a dead trainer left in ``processing`` go back
to ``pending`` and run again (finished MLflow runs of that task are reused, not retrained).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from confluent_kafka import Consumer, KafkaError, Message

from observability.logs import log_context
from schemas.base import ContractError
from schemas.batches import BatchClosed
from schemas.settings import Settings
from schemas.tasks import (
    CancelTask,
    CreateTask,
    ReleaseBatch,
    ReplayBatch,
    RestartTask,
    TaskJudgement,
    TaskProgress,
    TaskState,
    parse_task_command,
)
from session_store.base import SessionStore
from schemas.dead_letters import dead_letter_headers
from trainer.publisher import PublishFailed, TaskEventPublisher
from trainer.task_store import Task, TaskStore

log = logging.getLogger(__name__)


class TaskFailed(Exception):
    """An expected failure with a message meant for the operator (unknown method, missing batch…)."""


class TaskCanceled(Exception):
    pass


class TrainerWorkerDied(RuntimeError):
    """The fine-tune thread ended on an error: queued tasks would never run, so the trainer stops."""


@dataclass
class TaskControl:
    """What a running fine-tune sees of its task: a cancel flag and a progress sink."""

    task: Task
    should_stop: Callable[[], bool]
    report: Callable[[TaskProgress], None]


@dataclass(frozen=True)
class TaskResult:
    """What a finished task reports: the detail, the announced model (if any), the gate's judgement."""

    detail: str
    model_uri: str | None = None
    judgement: TaskJudgement | None = None


Executor = Callable[[TaskControl], TaskResult]
"""Runs a task's fine-tuning. Raises TaskFailed/TaskCanceled."""


class TaskService:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
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
        self.sessions = sessions
        self.publisher = publisher
        self.executor = executor
        self.release_timeout_s = release_timeout_s
        self._consumer_config = {
            "bootstrap.servers": bootstrap,
            "group.id": f"{self.topics.prefix}.trainer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **(consumer_config or {}),
        }
        self._queue: queue.Queue[str] = queue.Queue()
        self._cancel: set[str] = set()
        self._running: str | None = None
        self._stop = threading.Event()
        self._last_progress_publish = 0.0
        self.worker_error: BaseException | None = None

    # --- life cycle -----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        self._stop = stop or threading.Event()
        self._recover()
        worker = threading.Thread(target=self._work_or_report, name="fine-tune", daemon=True)
        worker.start()
        consumer = Consumer(self._consumer_config)
        consumer.subscribe([self.topics.commands.name, self.topics.batches.name])
        log.info("trainer consuming %s and %s", self.topics.commands.name, self.topics.batches.name)
        try:
            while not self._stop.is_set():
                if not worker.is_alive():
                    raise TrainerWorkerDied(f"the fine-tune thread died: {self.worker_error!r}") from self.worker_error
                message = consumer.poll(0.2)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", message.error())
                    continue
                self._handle(message)
                consumer.commit(message=message, asynchronous=False)
        finally:
            self._stop.set()
            consumer.close()
            worker.join(timeout=30)
            self.publisher.flush()

    def _recover(self) -> None:
        for task in self.tasks.list(TaskState.processing, limit=10_000):
            task = self._set(task, TaskState.pending, detail="trainer restarted while this task ran; queued again")
        for task in self.tasks.list(TaskState.pending, limit=10_000):
            self._queue.put(task.task_id)

    # --- messages -------------------------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        if message.topic() == self.topics.batches.name:
            self._on_batch_closed(message)
            return
        try:
            command = parse_task_command(message.value() or b"")
        except ContractError as error:
            # The stream worker puts it on the commands' dead-letter topic with this reason.
            log.warning("skipped unusable command at offset %s: %s", message.offset(), error.reason)
            return
        if isinstance(command, CreateTask):
            self._create(command.fine_tuning_method, command.batch_id, command.metadata,
                         command.idempotency_key or command.command_id)
        elif isinstance(command, ReplayBatch):
            method = command.fine_tuning_method or self.settings.default_fine_tuning_method
            self._create(method, command.batch_id, command.metadata,
                         command.idempotency_key or command.command_id)
        elif isinstance(command, CancelTask):
            self._cancel_task(command.task_id)
        elif isinstance(command, RestartTask):
            self._restart(command.task_id)
        elif isinstance(command, ReleaseBatch):
            pass  # the stream processors own the open batch

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
        if not self.settings.auto_train or closed.close_reason == "replay":
            return  # a replay sends its own replay_batch command, with the method it asked for
        if closed.release_id and self.tasks.get_by_release(closed.release_id):
            return  # released on behalf of a task that will train it
        self._create(self.settings.default_fine_tuning_method, closed.batch_id, {"trigger": "batch_closed"},
                     f"batch:{closed.batch_id}")

    def _create(self, method: str, batch_id: str | None, metadata: dict, idempotency_key: str) -> None:
        task, created = self.tasks.create(method, batch_id, metadata, idempotency_key)
        if created:
            self.publisher.status(task.to_status())
            self._queue.put(task.task_id)
            log.info("task %s created (%s, batch %s)", task.task_id, method, batch_id or "open batch")

    def _cancel_task(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.status.is_final:
            return
        if task.status == TaskState.pending and self._running != task_id:
            self._set(task, TaskState.canceled, detail="canceled before it started")
        else:
            self._cancel.add(task_id)

    def _restart(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is None or not task.status.is_final:
            return
        self._cancel.discard(task_id)
        self._set(task, TaskState.pending, detail="restarted", attempt=task.attempt + 1,
                  progress=TaskProgress(), model_uri=None)
        self._queue.put(task_id)

    # --- the worker thread ------------------------------------------------------------------------
    def _work_or_report(self) -> None:
        try:
            self._work()
        except BaseException as error:  # seen by the consume loop, which stops the trainer
            log.critical("the fine-tune thread died", exc_info=True)
            self.worker_error = error

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                task_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            task = self.tasks.get(task_id)
            if task is None or task.status != TaskState.pending:
                continue  # canceled while queued, or queued twice
            self._running = task_id
            try:
                with log_context(task_id=task.task_id, batch_id=task.batch_id):  # ids on every log line
                    self._execute(task)
            finally:
                self._running = None
                self._cancel.discard(task_id)

    def _execute(self, task: Task) -> None:
        try:
            self._run_task(task)
        except PublishFailed as error:
            # The broker would not take this task's status: the task store keeps the truth.
            log.error("task %s: %s", task.task_id, error)
            current = self.tasks.get(task.task_id) or task
            detail = f"a status of this task was not delivered, so it is not reported done: {error}"
            updated = self.tasks.update(current, status=TaskState.error, detail=detail)
            try:
                self.publisher.status(updated.to_status())
            except PublishFailed:
                log.error("task %s: the error status was not delivered either", task.task_id)

    def _run_task(self, task: Task) -> None:
        task = self._set(task, TaskState.processing, detail=None, progress=TaskProgress(stage="starting"))
        holder = {"task": task}

        def report(progress: TaskProgress) -> None:
            now = time.monotonic()
            current = holder["task"]
            changed_stage = progress.stage != current.progress.stage or progress.trial != current.progress.trial
            if changed_stage or now - self._last_progress_publish >= 0.5:
                self._last_progress_publish = now
                holder["task"] = self._set(current, TaskState.processing, progress=progress)

        should_stop = lambda: task.task_id in self._cancel or self._stop.is_set()  # noqa: E731
        try:
            if task.batch_id is None:
                task = holder["task"] = self._release_open_batch(task, should_stop)
            result = self.executor(TaskControl(task, should_stop, report))
        except TaskCanceled:
            if self._stop.is_set() and task.task_id not in self._cancel:
                return  # shutting down: stays processing, recovered as pending on the next start
            self._set(holder["task"], TaskState.canceled, detail="canceled while running")
        except TaskFailed as error:
            self._set(holder["task"], TaskState.error, detail=str(error))
        except PublishFailed as error:  # ModelReady or a release the broker never acknowledged
            log.error("task %s: %s", task.task_id, error)
            self._set(holder["task"], TaskState.error, detail=str(error))
        except Exception as error:  # noqa: BLE001 - any failure must end the task, never hang it
            log.exception("task %s failed", task.task_id)
            self._set(holder["task"], TaskState.error, detail=f"{type(error).__name__}: {error}")
        else:
            final = holder["task"]
            self._set(final, TaskState.done, detail=result.detail, model_uri=result.model_uri,
                      judgement=result.judgement,
                      progress=final.progress.model_copy(update={"stage": "done", "fraction": 1.0}))

    def _release_open_batch(self, task: Task, should_stop: Callable[[], bool]) -> Task:
        """The seeds' behaviour for a create without batch_id: release the open batch, train it."""
        release_id = task.idempotency_key or task.task_id
        task = self._set(task, TaskState.processing, progress=TaskProgress(stage="releasing batch"),
                         release_id=release_id)
        self.publisher.release(ReleaseBatch(release_id=release_id))
        deadline = time.monotonic() + self.release_timeout_s
        while time.monotonic() < deadline:
            if should_stop():
                raise TaskCanceled()
            batch = self.sessions.find_batch_by_release(release_id)
            if batch is not None and batch.closed_at is not None:
                return self._set(task, TaskState.processing, batch_id=batch.batch_id)
            time.sleep(0.2)
        raise TaskFailed(
            f"release {release_id!r} of the open batch was not confirmed within {self.release_timeout_s:.0f} s: "
            "is a stream worker running, and does the open batch hold any session?"
        )

    def _set(self, task: Task, status: TaskState, **changes) -> Task:
        updated = self.tasks.update(task, status=status, **changes)
        self.publisher.status(updated.to_status())
        if status.is_final:
            log.info("task %s %s%s", task.task_id, status.value, f": {updated.detail}" if updated.detail else "")
        return updated


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def task_work_dir(data_dir: Path, task: Task) -> Path:
    return data_dir / "tasks" / task.task_id
