"""The trainer never claims what did not happen: unacknowledged events fail, a dead fine-tune
thread stops the trainer, an unreadable BatchClosed is kept in a dead-letter topic.

Real brokers (the session's tansu, and one of the test's own that it kills), real MLflow, the
trainer's real task store with a failure injected by SQLite itself.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from embedding_studio.embedded.broker import TansuBroker
from messaging.topics import ensure_topics
from schemas.tasks import CreateTask, TaskProgress, TaskState, TaskStatus
from schemas.topics import TopicRegistry
from schemas.dead_letters import read_dead_letter
from tests.fixtures.broker import consume
from tests.fixtures.trainer import TrainerHarness
from trainer.publisher import PublishFailed, TaskEventPublisher

pytestmark = pytest.mark.slow


def _status(task_id: str) -> TaskStatus:
    from schemas.base import utc_now

    return TaskStatus(task_id=task_id, status=TaskState.done, fine_tuning_method="m", seq=1,
                      progress=TaskProgress(), created_at=utc_now(), updated_at=utc_now())


def test_an_event_the_broker_never_acknowledges_raises_instead_of_passing_for_delivered(tmp_path: Path):
    registry = TopicRegistry(prefix=f"t{uuid.uuid4().hex[:8]}")
    broker = TansuBroker(log_path=tmp_path / "broker.log").start()
    try:
        ensure_topics(broker.bootstrap, registry)
        publisher = TaskEventPublisher(broker.bootstrap, registry, {"message.timeout.ms": 1500}, attempts=2)
        publisher.status(_status("while-up"))  # acknowledged: returns
    finally:
        broker.stop()
    with publisher, pytest.raises(PublishFailed, match="not acknowledged by the broker after 2 attempt"):
        publisher.status(_status("after-the-broker-died"))


def test_an_unreadable_batch_closed_goes_to_the_batches_dead_letter_topic(trainer_harness: TrainerHarness):
    harness = trainer_harness
    producer_value = b'{"batch_id": "b-1", "session_count": "many"'
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": harness.settings.kafka_bootstrap})
    producer.produce(harness.topics.batches.name, key=b"b-1", value=producer_value)
    assert producer.flush(10) == 0
    (dead,) = consume(harness.settings.kafka_bootstrap, harness.topics.batches_dlq.name, 1, timeout_s=60)
    letter = read_dead_letter(dead.key(), dead.value(), dead.headers())
    assert letter.value == producer_value and "unreadable BatchClosed" in letter.reason
    assert letter.source_topic == harness.topics.batches.name and harness.thread.is_alive()


def test_a_dead_fine_tune_thread_stops_the_trainer_with_the_error(trainer_harness: TrainerHarness):
    harness = trainer_harness
    tasks_db = Path(harness.settings.data_dir) / "trainer" / "tasks.sqlite"
    with sqlite3.connect(tasks_db) as db:  # the task store fails under the worker thread
        # The store rewrites a task with INSERT OR REPLACE: refuse every write of a task that exists.
        db.execute("CREATE TRIGGER no_updates BEFORE INSERT ON tasks WHEN EXISTS "
                   "(SELECT 1 FROM tasks WHERE task_id = NEW.task_id) BEGIN SELECT RAISE(ABORT, 'disk gone'); END")
    command = CreateTask(fine_tuning_method="Tiny Method", batch_id="b-x", idempotency_key="doomed")
    harness.send(harness.topics.commands.name, command, "doomed")
    harness.thread.join(60)
    assert not harness.thread.is_alive(), "the trainer kept consuming tasks no thread would ever run"
    assert isinstance(harness.trainer.service.worker_error, sqlite3.IntegrityError)

