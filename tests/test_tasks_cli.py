"""`embedding-studio tasks`: commands reach the commands topic as valid contracts; `list` and `watch`
read the status topic as a trainer writes it (simulated here with the trainer's own publisher),
keep the newest event of each task by seq, and `watch` tells how a task ended by its exit code."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from embedding_studio.cli import main
from embedding_studio.cli.tasks_cmd import EXIT_CANCELED, EXIT_DONE, EXIT_ERROR, EXIT_TIMEOUT
from schemas.tasks import CancelTask, CreateTask, RestartTask, TaskProgress, TaskState, TaskStatus, parse_task_command
from schemas.topics import TopicRegistry
from tests.fixtures.broker import consume
from trainer.publisher import TaskEventPublisher

CREATED = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def system(monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, topics: TopicRegistry) -> TopicRegistry:
    monkeypatch.setenv("ES_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("ES_TOPIC_PREFIX", topics.prefix)
    return topics


@pytest.fixture
def trainer(kafka_bootstrap: str, system: TopicRegistry):
    """Publishes status events the way the trainer does, each one delivered before the call returns."""
    publisher = TaskEventPublisher(kafka_bootstrap, system)

    def publish(task_id: str, status: str, seq: int, *, key: str | None = None, created: int = 0,
                detail: str | None = None, **progress) -> None:
        publisher.status(TaskStatus(
            task_id=task_id, status=TaskState(status), seq=seq, fine_tuning_method="Default Fine Tuning Method",
            batch_id=f"batch-of-{task_id}", idempotency_key=key or f"key-{task_id}",
            progress=TaskProgress(**progress), detail=detail, created_at=CREATED + timedelta(minutes=created),
        ))
        publisher.flush(10)

    yield publish
    publisher.close()


class Background:
    """``main(argv)`` on a thread, for commands that wait for events published afterwards."""

    def __init__(self, argv: list[str]) -> None:
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(argv,), daemon=True)
        self.thread.start()

    def _run(self, argv: list[str]) -> None:
        self.code = main(argv)

    def result(self, timeout_s: float = 20.0) -> int | None:
        self.thread.join(timeout_s)
        return self.code


def test_create_sends_a_valid_create_task_keyed_by_its_idempotency_key(
    system: TopicRegistry, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["tasks", "create", "--method", "My Method", "--batch-id", "b-1", "--metadata", '{"why": "test"}',
                 "--idempotency-key", "nightly-42"])

    assert code == 0
    [message] = consume(kafka_bootstrap, system.commands.name, 1)
    command = parse_task_command(message.value())
    assert isinstance(command, CreateTask)
    assert (command.fine_tuning_method, command.batch_id, command.metadata, command.idempotency_key) == (
        "My Method", "b-1", {"why": "test"}, "nightly-42")
    assert message.key() == b"nightly-42"
    out = capsys.readouterr().out
    assert command.command_id in out and "idempotency key: nightly-42" in out


def test_create_without_key_or_method_uses_a_new_key_and_the_default_method(
    system: TopicRegistry, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tasks", "create"]) == 0

    [message] = consume(kafka_bootstrap, system.commands.name, 1)
    command = parse_task_command(message.value())
    assert isinstance(command, CreateTask)
    assert command.fine_tuning_method == "Default Fine Tuning Method" and command.batch_id is None
    assert command.idempotency_key == command.command_id == message.key().decode()
    assert f"idempotency key: {command.command_id}" in capsys.readouterr().out


def test_bad_metadata_is_a_usage_error(system: TopicRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["tasks", "create", "--metadata", "[1, 2]"])
    assert exit_.value.code == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_cancel_and_restart_are_keyed_by_the_task(system: TopicRegistry, kafka_bootstrap: str) -> None:
    assert main(["tasks", "cancel", "t-1"]) == 0
    assert main(["tasks", "restart", "t-2"]) == 0

    messages = consume(kafka_bootstrap, system.commands.name, 2)
    commands = [parse_task_command(m.value()) for m in messages]
    assert [type(c) for c in commands] == [CancelTask, RestartTask]
    assert [m.key() for m in messages] == [b"t-1", b"t-2"]


def test_without_a_broker_the_command_fails_clearly(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ES_KAFKA_BOOTSTRAP", raising=False)
    assert main(["tasks", "list"]) == 4
    assert "ES_KAFKA_BOOTSTRAP" in capsys.readouterr().err


def test_list_shows_the_newest_state_of_each_task(
    system: TopicRegistry, trainer, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer("t-old", "pending", 1, created=0)
    trainer("t-old", "processing", 2, created=0, stage="training", fraction=0.5)
    trainer("t-old", "done", 3, created=0, stage="done", fraction=1.0, detail="ndcg 0.41 -> 0.47")
    trainer("t-new", "pending", 1, created=5)
    trainer("t-new", "error", 3, created=5, detail="no such batch")
    trainer("t-new", "processing", 2, created=5)  # late and stale: seq 2 < 3

    assert main(["tasks", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TASK", "STATUS", "METHOD", "BATCH", "PROGRESS", "DETAIL", "UPDATED"]
    assert lines[1].startswith("t-new") and " error " in lines[1] and "no such batch" in lines[1]
    assert lines[2].startswith("t-old") and " done " in lines[2] and "100% done" in lines[2]
    assert len(lines) == 3

    assert main(["tasks", "list", "--status", "done", "--json"]) == 0
    import json

    listed = json.loads(capsys.readouterr().out)
    assert [(t["task_id"], t["status"], t["seq"]) for t in listed] == [("t-old", "done", 3)]


def test_list_of_an_empty_status_topic(system: TopicRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "list"]) == 0
    assert "no tasks" in capsys.readouterr().out


def test_watch_follows_a_running_task_and_exits_0_when_done(
    system: TopicRegistry, trainer, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer("t-1", "pending", 1)
    watcher = Background(["tasks", "watch", "t-1", "--timeout", "20"])
    time.sleep(0.5)
    trainer("t-1", "processing", 2, stage="training", trial=1, trials=2, epoch=1, epochs=3, fraction=0.2)
    trainer("t-1", "processing", 3, stage="training", trial=2, trials=2, epoch=3, epochs=3, fraction=0.9)
    assert watcher.code is None, "a running task must not end the watch"
    trainer("t-1", "done", 4, stage="done", fraction=1.0, detail="model stored")

    assert watcher.result() == EXIT_DONE
    assert "task t-1 done: model stored" in capsys.readouterr().out


def test_watch_exits_1_on_error_and_drops_stale_events(
    system: TopicRegistry, trainer, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer("t-2", "pending", 1)
    trainer("t-2", "error", 3, detail="CUDA out of memory")
    trainer("t-2", "done", 2)  # arrives last but is older: must not be taken for the outcome

    assert main(["tasks", "watch", "t-2", "--timeout", "20"]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert "task t-2 error: CUDA out of memory" in out
    assert "1 stale" in err


def test_watch_by_idempotency_key_exits_2_when_canceled(system: TopicRegistry, trainer) -> None:
    trainer("t-other", "done", 1, key="other-key")
    trainer("t-3", "processing", 1, key="my-key")
    watcher = Background(["tasks", "watch", "--idempotency-key", "my-key", "--timeout", "20"])
    time.sleep(0.5)
    trainer("t-3", "canceled", 2, key="my-key")

    assert watcher.result() == EXIT_CANCELED


def test_watch_gives_up_after_its_timeout(system: TopicRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["tasks", "watch", "nobody", "--timeout", "1"]) == EXIT_TIMEOUT
    assert time.monotonic() - started < 5
    assert "timed out" in capsys.readouterr().out


def test_create_watch_finds_its_task_by_the_idempotency_key(
    system: TopicRegistry, kafka_bootstrap: str, trainer
) -> None:
    creator = Background(["tasks", "create", "--batch-id", "b-9", "--watch", "--timeout", "20"])
    [message] = consume(kafka_bootstrap, system.commands.name, 1)
    command = parse_task_command(message.value())
    assert isinstance(command, CreateTask)
    # The trainer names the task itself; the watcher knows only the key it sent.
    trainer("t-made-by-trainer", "pending", 1, key=command.idempotency_key)
    trainer("t-made-by-trainer", "done", 2, key=command.idempotency_key)

    assert creator.result() == EXIT_DONE


def test_restart_watch_waits_for_the_new_run_rather_than_the_old_outcome(
    system: TopicRegistry, kafka_bootstrap: str, trainer
) -> None:
    trainer("t-4", "pending", 1)
    trainer("t-4", "error", 2, detail="first attempt failed")
    restarter = Background(["tasks", "restart", "t-4", "--watch", "--timeout", "20"])
    [message] = consume(kafka_bootstrap, system.commands.name, 1)
    assert isinstance(parse_task_command(message.value()), RestartTask)
    time.sleep(0.5)
    assert restarter.code is None, "the old error must not end the watch of the restarted task"
    trainer("t-4", "pending", 3, detail="restarted")
    trainer("t-4", "done", 4)

    assert restarter.result() == EXIT_DONE
