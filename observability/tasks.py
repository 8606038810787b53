"""Trainer metrics, read off the task statuses the trainer publishes (``observe_status``, called for
every status it sends): tasks per latest state, transitions, the duration of each task that ended,
and training steps per second from the progress of the running one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from observability import metrics as m
from schemas.tasks import TaskState, TaskStatus


@dataclass
class _Seen:
    seq: int
    state: TaskState
    step_key: tuple[int, int]  # (trial, epoch): steps restart with each
    step: int
    at: float


class TaskObserver:
    def __init__(self) -> None:
        self._tasks: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def observe(self, status: TaskStatus) -> None:
        with self._lock:
            seen = self._tasks.get(status.task_id)
            if seen is not None and status.seq <= seen.seq:
                return  # stale or repeated
            now = time.monotonic()
            m.TASK_TRANSITIONS.labels(status.status.value).inc()
            if seen is None or seen.state != status.status:
                if seen is not None:
                    m.TASKS.labels(seen.state.value).dec()
                m.TASKS.labels(status.status.value).inc()
                if status.status.is_final:
                    m.TASK_DURATION.labels(status.status.value).observe(
                        max((status.updated_at - status.created_at).total_seconds(), 0.0))
            progress = status.progress
            step_key = (progress.trial, progress.epoch)
            if seen is not None and seen.step_key == step_key and progress.step > seen.step and now > seen.at:
                steps = progress.step - seen.step
                m.TRAINING_STEPS.inc(steps)
                m.TRAINING_STEPS_PER_S.set(steps / (now - seen.at))
            elif seen is not None and seen.step_key != step_key and progress.step > 0:
                m.TRAINING_STEPS.inc(progress.step)
            if status.status != TaskState.processing:
                m.TRAINING_STEPS_PER_S.set(0)
            self._tasks[status.task_id] = _Seen(status.seq, status.status, step_key, progress.step, now)


_observer: TaskObserver | None = None


def observe_status(status: TaskStatus) -> None:
    """Count one published task status into this process's trainer metrics."""
    global _observer
    if _observer is None:
        _observer = TaskObserver()
    _observer.observe(status)
