"""The trainer's task store keeps the gate's judgement, and opens a store written before it did."""

from __future__ import annotations

import sqlite3

from schemas.tasks import TaskJudgement, TaskState
from trainer.task_store import TaskStore

JUDGEMENT = TaskJudgement(metric="ips_ndcg_at_10", base=0.70, tuned=0.75, lift=0.05, lift_ci_low=0.002,
                          lift_ci_high=0.10, lift_confidence=0.95, test_queries=155, announced=True,
                          reason="significant lift")


def test_a_final_task_keeps_the_judgement_and_publishes_it(tmp_path):
    store = TaskStore(tmp_path / "tasks.sqlite")
    task, _ = store.create("Method", "batch-1", {}, "key-1")
    store.update(task, status=TaskState.done, detail="better model", judgement=JUDGEMENT)

    reopened = TaskStore(tmp_path / "tasks.sqlite").get(task.task_id)
    assert reopened.judgement == JUDGEMENT
    assert reopened.to_status().judgement == JUDGEMENT


def test_a_store_from_before_judgements_opens_with_its_tasks(tmp_path):
    path = tmp_path / "tasks.sqlite"
    old = sqlite3.connect(str(path))
    old.executescript("""CREATE TABLE tasks (task_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE,
        release_id TEXT UNIQUE, status TEXT NOT NULL, fine_tuning_method TEXT NOT NULL, batch_id TEXT,
        metadata TEXT NOT NULL, detail TEXT, progress TEXT NOT NULL, seq INTEGER NOT NULL, attempt INTEGER NOT NULL,
        model_uri TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);""")
    old.execute("INSERT INTO tasks VALUES ('t1', 'k1', NULL, 'done', 'Method', 'b1', '{}', 'ok', '{}', 3, 1, NULL, "
                "'2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')")
    old.commit()
    old.close()

    store = TaskStore(path)
    task = store.get("t1")
    assert task.status == TaskState.done and task.judgement is None
    store.update(task, judgement=JUDGEMENT)
    assert store.get("t1").judgement == JUDGEMENT
