"""Durable state of fine-tuning tasks (SQLite in the trainer's data folder).

The idempotency key is a UNIQUE column, so the same key yields the same task even when two
commands race; ``seq`` grows by one on every change and numbers the published status events.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from schemas.tasks import TaskJudgement, TaskProgress, TaskState, TaskStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    release_id TEXT UNIQUE,
    status TEXT NOT NULL,
    fine_tuning_method TEXT NOT NULL,
    batch_id TEXT,
    metadata TEXT NOT NULL,
    detail TEXT,
    progress TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    model_uri TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    judgement TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status, created_at);
"""


@dataclass(frozen=True)
class Task:
    task_id: str
    status: TaskState
    fine_tuning_method: str
    batch_id: str | None
    idempotency_key: str | None
    release_id: str | None
    metadata: dict = field(default_factory=dict)
    detail: str | None = None
    progress: TaskProgress = field(default_factory=TaskProgress)
    seq: int = 0
    attempt: int = 1
    model_uri: str | None = None
    judgement: TaskJudgement | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    updated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def to_status(self) -> TaskStatus:
        return TaskStatus(
            task_id=self.task_id, status=self.status, seq=self.seq, fine_tuning_method=self.fine_tuning_method,
            batch_id=self.batch_id, idempotency_key=self.idempotency_key, progress=self.progress,
            detail=self.detail, judgement=self.judgement, created_at=self.created_at, updated_at=self.updated_at,
        )


class TaskStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        # A task store written before the gate's judgement was kept gains the column (NULL for old tasks).
        if "judgement" not in {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}:
            self._db.execute("ALTER TABLE tasks ADD COLUMN judgement TEXT")
        self._lock = threading.Lock()  # the command loop and the training thread share one connection

    def create(
        self, fine_tuning_method: str, batch_id: str | None, metadata: dict, idempotency_key: str | None,
        task_id: str | None = None,
    ) -> tuple[Task, bool]:
        """The task for this idempotency key, created if new; returns (task, created)."""
        task = Task(
            task_id=task_id or uuid.uuid4().hex, status=TaskState.pending, fine_tuning_method=fine_tuning_method,
            batch_id=batch_id, idempotency_key=idempotency_key, release_id=None, metadata=metadata,
        )
        with self._lock:
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", _row(task)
            ).rowcount
        if inserted:
            return task, True
        existing = self.get_by_key(idempotency_key) if idempotency_key else self.get(task.task_id)
        assert existing is not None
        return existing, False

    def get(self, task_id: str) -> Task | None:
        return self._one("SELECT * FROM tasks WHERE task_id = ?", task_id)

    def get_by_key(self, idempotency_key: str) -> Task | None:
        return self._one("SELECT * FROM tasks WHERE idempotency_key = ?", idempotency_key)

    def get_by_release(self, release_id: str) -> Task | None:
        return self._one("SELECT * FROM tasks WHERE release_id = ?", release_id)

    def list(self, status: TaskState | None = None, limit: int = 100) -> list[Task]:
        with self._lock:
            if status is None:
                rows = self._db.execute("SELECT * FROM tasks ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM tasks WHERE status = ? ORDER BY created_at LIMIT ?", (status.value, limit)
                ).fetchall()
        return [_task(row) for row in rows]

    def update(self, task: Task, **changes) -> Task:
        """Write a changed task with the next ``seq``."""
        with self._lock:
            current = self._db.execute("SELECT seq FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone()
            updated = replace(task, **changes, seq=current[0] + 1, updated_at=datetime.now(timezone.utc))
            self._db.execute("INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", _row(updated))
        return updated

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, value: str) -> Task | None:
        with self._lock:
            row = self._db.execute(sql, (value,)).fetchone()
        return _task(row) if row else None


def _row(task: Task) -> tuple:
    return (
        task.task_id, task.idempotency_key, task.release_id, task.status.value, task.fine_tuning_method,
        task.batch_id, json.dumps(task.metadata), task.detail, task.progress.model_dump_json(), task.seq,
        task.attempt, task.model_uri, task.created_at.isoformat(), task.updated_at.isoformat(),
        task.judgement.model_dump_json() if task.judgement is not None else None,
    )


def _task(row: tuple) -> Task:
    return Task(
        task_id=row[0], idempotency_key=row[1], release_id=row[2], status=TaskState(row[3]),
        fine_tuning_method=row[4], batch_id=row[5], metadata=json.loads(row[6]), detail=row[7],
        progress=TaskProgress.model_validate_json(row[8]), seq=row[9], attempt=row[10], model_uri=row[11],
        created_at=datetime.fromisoformat(row[12]), updated_at=datetime.fromisoformat(row[13]),
        judgement=TaskJudgement.model_validate_json(row[14]) if row[14] else None,
    )
