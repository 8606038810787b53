"""What the trainer reports about tasks, read back from the task status topic.

Every change of a task is an event numbered by ``seq``; stale or repeated events are dropped.
``status_feed`` reads the topic from its first record (``messaging.EventReader``), ``latest_states``
to its end, ``follow`` until one task ends.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from embedding_studio.cli.arguments import check_topic
from embedding_studio.cli.errors import EXIT_CANCELED, EXIT_DONE, EXIT_ERROR, EXIT_TIMEOUT, CliError

if TYPE_CHECKING:
    import argparse

    from messaging import KafkaCluster
    from schemas.tasks import TaskStatus
    from schemas.topics import TopicRegistry


class StatusFeed:
    """The status topic from its first record; ``caught_up`` once every partition was read to its end once."""

    def __init__(self, cluster: "KafkaCluster", topic: str):
        from messaging import EventReader
        from schemas.tasks import TaskStatus

        self.topic = topic
        self._events: EventReader[TaskStatus] = EventReader(cluster, topic, TaskStatus,
                                                            partitions=check_topic(cluster, topic))

    @property
    def caught_up(self) -> bool:
        return self._events.caught_up

    @property
    def unreadable(self) -> int:
        return self._events.unreadable

    def read(self, timeout_s: float = 0.2) -> list["TaskStatus"]:
        from messaging import ReadError

        try:
            return self._events.poll(timeout_s)
        except ReadError as error:
            raise CliError(str(error)) from error

    def close(self) -> None:
        self._events.close()


def latest_states(cluster: "KafkaCluster", topics: "TopicRegistry", timeout_s: float) -> tuple[dict[str, "TaskStatus"], bool]:
    """The highest-seq status of every task on the status topic; (states, complete)."""
    feed = StatusFeed(cluster, topics.task_status.name)
    latest: dict[str, TaskStatus] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not feed.caught_up and time.monotonic() < deadline:
            for status in feed.read():
                known = latest.get(status.task_id)
                if known is None or status.seq > known.seq:
                    latest[status.task_id] = status
        return latest, feed.caught_up
    finally:
        feed.close()


def follow(
    cluster: "KafkaCluster", topics: "TopicRegistry", *, task_id: str | None = None, idempotency_key: str | None = None,
    timeout_s: float | None = None, min_seq: int = 0, out=None,
) -> int:
    """Follow one task (by id, or by the idempotency key it was created with) until a final state
    with ``seq >= min_seq``; returns the exit code. Events older than the newest seen are dropped.
    A final state read from the topic's backlog counts only if nothing newer follows it there (a
    restarted task has an old final state followed by new events)."""
    from tqdm import tqdm

    from schemas.tasks import TaskState

    out = out or sys.stdout
    assert task_id or idempotency_key
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    feed = StatusFeed(cluster, topics.task_status.name)
    who = task_id or f"key {idempotency_key}"
    bar = tqdm(total=100, file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.2,
               desc=f"{who}: waiting for the trainer", bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}]")
    current: TaskStatus | None = None
    stale = 0
    try:
        while True:
            for status in feed.read():
                if task_id is None:
                    if status.idempotency_key != idempotency_key:
                        continue
                    task_id = status.task_id
                if status.task_id != task_id:
                    continue
                if current is not None and status.seq <= current.seq:
                    stale += 1
                    continue
                current = status
                bar.set_description_str(describe(status), refresh=False)
                bar.n = round(status.progress.fraction * 100, 1)
                bar.refresh()
            if (current is not None and feed.caught_up and current.status.is_final
                    and current.seq >= min_seq):
                break
            if deadline is not None and time.monotonic() >= deadline:
                bar.close()
                state = f"last seen {current.status.value} (seq {current.seq})" if current else "no status seen"
                print(f"{who}: timed out after {timeout_s:g} s; {state}", file=out)
                return EXIT_TIMEOUT
    finally:
        bar.close()
        feed.close()
    detail = f": {current.detail}" if current.detail else ""
    print(f"task {current.task_id} {current.status.value}{detail}", file=out)
    if stale:
        print(f"({stale} stale or repeated status event(s) dropped)", file=sys.stderr)
    return {TaskState.done: EXIT_DONE, TaskState.canceled: EXIT_CANCELED}.get(current.status, EXIT_ERROR)


def describe(status: "TaskStatus") -> str:
    progress = status.progress
    parts = [status.task_id[:12], status.status.value, progress.stage]
    if progress.trials:
        parts.append(f"trial {progress.trial}/{progress.trials}")
    if progress.epochs:
        parts.append(f"epoch {progress.epoch}/{progress.epochs}")
    return " · ".join(parts)


def follow_if_asked(args: argparse.Namespace, cluster: "KafkaCluster", topics: "TopicRegistry", idempotency_key: str) -> int:
    """With --watch, follow the task made under ``idempotency_key``; otherwise say how to."""
    if not args.watch:
        print(f"follow it: embedding-studio tasks watch --idempotency-key {idempotency_key}")
        return 0
    return follow(cluster, topics, idempotency_key=idempotency_key, timeout_s=args.timeout)


