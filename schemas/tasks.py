"""Task commands (operators → system) and task status events (system → consumers).

All commands travel on one command topic, told apart by ``command``. ``release_batch`` is handled by
the stream processors (they own the open batch); the others by the trainer.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError

from schemas.base import (
    Contract,
    Part,
    ContractError,
    Identifier,
    Metadata,
    UtcDatetime,
    describe_validation_error,
    utc_now,
)


def _new_id() -> str:
    return uuid.uuid4().hex


class _Command(Contract):
    command_id: Identifier = Field(default_factory=_new_id, description="Unique id of this message.")
    sent_at: UtcDatetime = Field(default_factory=utc_now)


class CreateTask(_Command):
    """Fine-tune ``batch_id`` with a plugin. Without ``batch_id`` the open batch is released first
    (its ``release_id`` is the idempotency key, else the task id). The same ``idempotency_key``
    always yields the same task."""

    command: Literal["create"] = "create"
    fine_tuning_method: Annotated[str, Field(min_length=1, max_length=256)]
    batch_id: Identifier | None = None
    metadata: Metadata
    idempotency_key: Identifier | None = None


class CancelTask(_Command):
    command: Literal["cancel"] = "cancel"
    task_id: Identifier


class RestartTask(_Command):
    """Run a task that ended (error or canceled) again from the start."""

    command: Literal["restart"] = "restart"
    task_id: Identifier


class ReleaseBatch(_Command):
    """Close the open batch now. The same ``release_id`` sent again closes nothing more."""

    command: Literal["release_batch"] = "release_batch"
    release_id: Identifier


class ReplayBatch(_Command):
    """Train an already stored batch again, as a new task."""

    command: Literal["replay_batch"] = "replay_batch"
    batch_id: Identifier
    fine_tuning_method: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    metadata: Metadata
    idempotency_key: Identifier | None = None


TaskCommand = Annotated[
    Union[CreateTask, CancelTask, RestartTask, ReleaseBatch, ReplayBatch], Field(discriminator="command")
]
TASK_COMMAND_TYPES = (CreateTask, CancelTask, RestartTask, ReleaseBatch, ReplayBatch)

_command_adapter: TypeAdapter[TaskCommand] = TypeAdapter(TaskCommand)


def parse_task_command(raw: bytes | str | dict) -> CreateTask | CancelTask | RestartTask | ReleaseBatch | ReplayBatch:
    try:
        if isinstance(raw, dict):
            return _command_adapter.validate_python(raw)
        return _command_adapter.validate_json(raw)
    except ValidationError as error:
        raise ContractError(describe_validation_error(error)) from error


class TaskState(StrEnum):
    pending = "pending"
    processing = "processing"
    done = "done"
    canceled = "canceled"
    error = "error"

    @property
    def is_final(self) -> bool:
        return self in (TaskState.done, TaskState.canceled, TaskState.error)


class TaskProgress(Part):
    """Where a running fine-tune is; ``fraction`` is overall completion in [0, 1]."""

    stage: str = "queued"
    trial: int = 0
    trials: int = 0
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)


class TaskJudgement(Part):
    """How the announcement gate judged a task's best trial against the starting model on the batch's
    test queries: ``lift`` is tuned − base of ``metric``, with its interval at ``lift_confidence``."""

    metric: str
    base: float
    tuned: float
    lift: float
    lift_ci_low: float
    lift_ci_high: float
    lift_confidence: float = Field(gt=0, lt=1)
    test_queries: int = Field(ge=0)
    announced: bool
    reason: str


class TaskStatus(Contract):
    """Published on every change of a task. ``seq`` grows by one per event of a task, so a
    consumer can drop stale or repeated ones."""

    task_id: Identifier
    status: TaskState
    seq: int = Field(ge=0)
    fine_tuning_method: str
    batch_id: Identifier | None = None
    idempotency_key: Identifier | None = None
    progress: TaskProgress = Field(default_factory=TaskProgress)
    detail: str | None = Field(default=None, max_length=4000)
    judgement: TaskJudgement | None = Field(
        default=None, description="On the final status of a task the gate judged: the lift, its interval, the test queries."
    )
    created_at: UtcDatetime
    updated_at: UtcDatetime = Field(default_factory=utc_now)
