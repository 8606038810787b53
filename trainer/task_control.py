"""What a running fine-tune sees of its task, and how it says it could not finish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from schemas.tasks import TaskJudgement, TaskProgress
from trainer.task_store import Task


class TaskFailed(Exception):
    """An expected failure with a message meant for the operator (unknown method, missing batch…)."""


class TaskCanceled(Exception):
    pass


@dataclass
class TaskControl:
    """A cancel flag and a progress sink."""

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
