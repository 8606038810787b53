"""What a running fine-tune sees of its task, and how it says it could not finish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from schemas.tasks import TaskProgress
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


Executor = Callable[[TaskControl], tuple[str, str | None]]
"""Runs a task's fine-tuning; returns (detail, model_uri or None). Raises TaskFailed/TaskCanceled."""
