"""The tasks' state machine: what each command and closed batch does to the tasks, and the one
place a task changes state (stored first, then published as a TaskStatus).

Every transition is idempotent: a command or event delivered again finds the task already where it
led and changes nothing. Tasks waiting to run are queued here; ``TaskWorker`` takes them one at a
time.
"""

from __future__ import annotations

import logging
import queue
import threading

from schemas.batches import BatchClosed
from schemas.settings import Settings
from schemas.tasks import CancelTask, CreateTask, ReleaseBatch, ReplayBatch, RestartTask, TaskCommand, TaskProgress, TaskState
from trainer.publisher import TaskEventPublisher
from trainer.task_store import Task, TaskStore

log = logging.getLogger(__name__)


class TaskStates:
    def __init__(self, settings: Settings, tasks: TaskStore, publisher: TaskEventPublisher) -> None:
        self.settings = settings
        self.tasks = tasks
        self.publisher = publisher
        self.stopping = threading.Event()
        self.running: str | None = None
        self._queue: queue.Queue[str] = queue.Queue()
        self._cancel: set[str] = set()

    # --- start-up ---------------------------------------------------------------------------------
    def recover(self) -> None:
        """Tasks a dead trainer left in ``processing`` go back to ``pending``; every pending task is queued."""
        for task in self.tasks.list(TaskState.processing, limit=10_000):
            self.set(task, TaskState.pending, detail="trainer restarted while this task ran; queued again")
        for task in self.tasks.list(TaskState.pending, limit=10_000):
            self._queue.put(task.task_id)

    # --- what arrives -----------------------------------------------------------------------------
    def on_command(self, command: TaskCommand) -> None:
        if isinstance(command, CreateTask):
            self.create(command.fine_tuning_method, command.batch_id, command.metadata,
                        command.idempotency_key or command.command_id)
        elif isinstance(command, ReplayBatch):
            method = command.fine_tuning_method or self.settings.default_fine_tuning_method
            self.create(method, command.batch_id, command.metadata, command.idempotency_key or command.command_id)
        elif isinstance(command, CancelTask):
            self.cancel(command.task_id)
        elif isinstance(command, RestartTask):
            self.restart(command.task_id)
        elif isinstance(command, ReleaseBatch):
            pass  # the stream processors own the open batch

    def on_batch_closed(self, closed: BatchClosed) -> None:
        if not self.settings.auto_train or closed.close_reason == "replay":
            return  # a replay sends its own replay_batch command, with the method it asked for
        if closed.release_id and self.tasks.get_by_release(closed.release_id):
            return  # released on behalf of a task that will train it
        self.create(self.settings.default_fine_tuning_method, closed.batch_id, {"trigger": "batch_closed"},
                    f"batch:{closed.batch_id}")

    # --- transitions ------------------------------------------------------------------------------
    def create(self, method: str, batch_id: str | None, metadata: dict, idempotency_key: str) -> None:
        task, created = self.tasks.create(method, batch_id, metadata, idempotency_key)
        if created:
            self.publisher.status(task.to_status())
            self._queue.put(task.task_id)
            log.info("task %s created (%s, batch %s)", task.task_id, method, batch_id or "open batch")

    def cancel(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.status.is_final:
            return
        if task.status == TaskState.pending and self.running != task_id:
            self.set(task, TaskState.canceled, detail="canceled before it started")
        else:
            self._cancel.add(task_id)

    def restart(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is None or not task.status.is_final:
            return
        self._cancel.discard(task_id)
        self.set(task, TaskState.pending, detail="restarted", attempt=task.attempt + 1,
                 progress=TaskProgress(), model_uri=None)
        self._queue.put(task_id)

    def set(self, task: Task, status: TaskState, **changes) -> Task:
        updated = self.tasks.update(task, status=status, **changes)
        self.publisher.status(updated.to_status())
        if status.is_final:
            log.info("task %s %s%s", task.task_id, status.value, f": {updated.detail}" if updated.detail else "")
        return updated

    # --- for the worker ---------------------------------------------------------------------------
    def next_pending(self, timeout_s: float = 0.2) -> Task | None:
        """The next queued task that is still pending (a task canceled while queued, or queued twice,
        is passed over); None when nothing is queued."""
        try:
            task_id = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        task = self.tasks.get(task_id)
        return task if task is not None and task.status == TaskState.pending else None

    def cancel_requested(self, task_id: str) -> bool:
        return task_id in self._cancel

    def should_stop(self, task_id: str) -> bool:
        return task_id in self._cancel or self.stopping.is_set()

    def finished(self, task_id: str) -> None:
        self.running = None
        self._cancel.discard(task_id)
