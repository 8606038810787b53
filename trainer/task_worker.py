"""The fine-tune thread: runs one pending task at a time and turns how it ended into a state.

A task without a batch first releases the open batch (the reference EmbeddingStudio's behaviour
for a create without batch_id): the worker sends a ReleaseBatch and waits for the BatchClosed that
names its release, which the consume loop reads on the batches topic and hands to
``ReleaseWaiter.arrived`` — no polling of the store. (The batches and commands topics have one
partition each and a trainer group assigns them by range, so the member that runs a task also reads
its BatchClosed.) Progress is published at most every ``progress_interval_s`` unless the stage or
the trial changes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from observability.logs import log_context
from schemas.batches import BatchClosed
from schemas.tasks import ReleaseBatch, TaskProgress, TaskState
from session_store.base import SessionStore
from trainer.publisher import PublishFailed, TaskEventPublisher
from trainer.task_control import Executor, TaskCanceled, TaskControl, TaskFailed
from trainer.task_states import TaskStates
from trainer.task_store import Task

log = logging.getLogger(__name__)


class ReleaseWaiter:
    """BatchClosed events of releases a task is waiting for, handed from the consume loop to the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, threading.Event] = {}
        self._closed: dict[str, str] = {}  # release id -> batch id

    def expect(self, release_id: str) -> None:
        with self._lock:
            self._waiting.setdefault(release_id, threading.Event())

    def forget(self, release_id: str) -> None:
        with self._lock:
            self._waiting.pop(release_id, None)
            self._closed.pop(release_id, None)

    def arrived(self, closed: BatchClosed) -> None:
        if not closed.release_id:
            return
        with self._lock:
            event = self._waiting.get(closed.release_id)
            if event is not None:
                self._closed[closed.release_id] = closed.batch_id
                event.set()

    def wait(self, release_id: str, timeout_s: float, should_stop: Callable[[], bool]) -> str | None:
        """The batch id the release closed, or None after ``timeout_s``; TaskCanceled when asked to stop."""
        with self._lock:
            event = self._waiting.setdefault(release_id, threading.Event())
        deadline = time.monotonic() + timeout_s
        try:
            while not event.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                if should_stop():
                    raise TaskCanceled()
                if time.monotonic() >= deadline:
                    return None
            with self._lock:
                return self._closed[release_id]
        finally:
            self.forget(release_id)


class TaskWorker:
    def __init__(self, states: TaskStates, executor: Executor, sessions: SessionStore,
                 publisher: TaskEventPublisher, releases: ReleaseWaiter, *, release_timeout_s: float = 120.0,
                 progress_interval_s: float = 0.5) -> None:
        self.states = states
        self.executor = executor
        self.sessions = sessions
        self.publisher = publisher
        self.releases = releases
        self.release_timeout_s = release_timeout_s
        self.progress_interval_s = progress_interval_s
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._last_progress_publish = 0.0

    # --- the thread -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work_or_report, name="fine-tune", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _work_or_report(self) -> None:
        try:
            self._work()
        except BaseException as error:  # seen by the consume loop, which stops the trainer
            log.critical("the fine-tune thread died", exc_info=True)
            self.error = error

    def _work(self) -> None:
        states = self.states
        while not states.stopping.is_set():
            task = states.next_pending()
            if task is None:
                continue
            states.running = task.task_id
            try:
                with log_context(task_id=task.task_id, batch_id=task.batch_id):  # ids on every log line
                    self._execute(task)
            finally:
                states.finished(task.task_id)

    # --- one task ---------------------------------------------------------------------------------
    def _execute(self, task: Task) -> None:
        try:
            self._run_task(task)
        except PublishFailed as error:
            # The broker would not take this task's status: the task store keeps the truth.
            log.error("task %s: %s", task.task_id, error)
            tasks = self.states.tasks
            current = tasks.get(task.task_id) or task
            detail = f"a status of this task was not delivered, so it is not reported done: {error}"
            updated = tasks.update(current, status=TaskState.error, detail=detail)
            try:
                self.publisher.status(updated.to_status())
            except PublishFailed:
                log.error("task %s: the error status was not delivered either", task.task_id)

    def _run_task(self, task: Task) -> None:
        states = self.states
        task = states.set(task, TaskState.processing, detail=None, progress=TaskProgress(stage="starting"))
        holder = {"task": task}

        def report(progress: TaskProgress) -> None:
            now = time.monotonic()
            current = holder["task"]
            changed_stage = progress.stage != current.progress.stage or progress.trial != current.progress.trial
            if changed_stage or now - self._last_progress_publish >= self.progress_interval_s:
                self._last_progress_publish = now
                holder["task"] = states.set(current, TaskState.processing, progress=progress)

        should_stop = lambda: states.should_stop(task.task_id)  # noqa: E731
        try:
            if task.batch_id is None:
                task = holder["task"] = self._release_open_batch(task, should_stop)
            result = self.executor(TaskControl(task, should_stop, report))
        except TaskCanceled:
            if states.stopping.is_set() and not states.cancel_requested(task.task_id):
                return  # shutting down: stays processing, recovered as pending on the next start
            states.set(holder["task"], TaskState.canceled, detail="canceled while running")
        except TaskFailed as error:
            states.set(holder["task"], TaskState.error, detail=str(error))
        except PublishFailed as error:  # ModelReady or a release the broker never acknowledged
            log.error("task %s: %s", task.task_id, error)
            states.set(holder["task"], TaskState.error, detail=str(error))
        except Exception as error:  # noqa: BLE001 - any failure must end the task, never hang it
            log.exception("task %s failed", task.task_id)
            states.set(holder["task"], TaskState.error, detail=f"{type(error).__name__}: {error}")
        else:
            final = holder["task"]
            states.set(final, TaskState.done, detail=result.detail, model_uri=result.model_uri,
                       judgement=result.judgement,
                       progress=final.progress.model_copy(update={"stage": "done", "fraction": 1.0}))

    def _release_open_batch(self, task: Task, should_stop: Callable[[], bool]) -> Task:
        """Release the open batch and wait for its BatchClosed; the task then trains that batch."""
        release_id = task.idempotency_key or task.task_id
        task = self.states.set(task, TaskState.processing, progress=TaskProgress(stage="releasing batch"),
                               release_id=release_id)
        self.releases.expect(release_id)  # before the release goes out: its BatchClosed cannot slip by
        # A trainer restarted after the release closed the batch finds it in the store (its
        # BatchClosed was read, and committed, by the trainer that died).
        batch = self.sessions.find_batch_by_release(release_id)
        if batch is not None and batch.closed_at is not None:
            self.releases.forget(release_id)
            return self.states.set(task, TaskState.processing, batch_id=batch.batch_id)
        self.publisher.release(ReleaseBatch(release_id=release_id))
        batch_id = self.releases.wait(release_id, self.release_timeout_s, should_stop)
        if batch_id is None:
            raise TaskFailed(
                f"release {release_id!r} of the open batch was not confirmed within {self.release_timeout_s:.0f} s: "
                "is a stream worker running, and does the open batch hold any session?"
            )
        return self.states.set(task, TaskState.processing, batch_id=batch_id)
