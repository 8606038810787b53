from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from embedding_studio.cli.tables import clip, print_table

if TYPE_CHECKING:
    from schemas.tasks import TaskStatus
    from schemas.topics import TopicRegistry

HELP = "Create, cancel, restart, list and watch fine-tuning tasks."
DESCRIPTION = (
    "Talks to the trainer through Kafka (ES_KAFKA_BOOTSTRAP or --bootstrap; topic names from "
    "ES_TOPIC_PREFIX): commands go to the commands topic, and what the trainer reports is read back "
    "from the task status topic, where every change of a task is an event numbered by `seq` (stale or "
    "repeated events are dropped). `create` sends a CreateTask and prints its idempotency key: sending "
    "the same key again never makes a second task. `watch` follows one task with a progress bar until "
    "it ends. Exit codes of anything that watches: 0 done, 1 error, 2 canceled, 3 timed out; 4 means "
    "the command could not be sent or the broker could not be read."
)

EXIT_DONE, EXIT_ERROR, EXIT_CANCELED, EXIT_TIMEOUT, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4


class CliError(Exception):
    """Stops a command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_UNAVAILABLE):
        super().__init__(message)
        self.code = code


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="tasks_action", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create", help="Send a CreateTask command.",
        description="Ask the trainer to fine-tune a batch. Without --batch-id the trainer first releases "
        "(closes) the open batch and trains that. Prints the command id and the idempotency key (a new "
        "one unless --idempotency-key is given); repeating the command with that key is safe.",
    )
    create.add_argument("--method", metavar="NAME",
                        help="Fine-tuning method (plugin name); default: ES_DEFAULT_FINE_TUNING_METHOD.")
    create.add_argument("--batch-id", metavar="ID", help="Batch to train; default: release the open batch.")
    create.add_argument("--metadata", type=json_object, default={}, metavar="JSON",
                        help="A JSON object kept with the task, e.g. '{\"reason\": \"nightly\"}'.")
    create.add_argument("--idempotency-key", metavar="KEY", help="Same key, same task (default: a new key).")
    _add_watch_options(create)
    _add_bootstrap(create)
    create.set_defaults(handler=_guarded(_create))

    for name, helptext in (("cancel", "Send a CancelTask command."),
                           ("restart", "Send a RestartTask command (a task that ended in error or canceled).")):
        sub = actions.add_parser(name, help=helptext, description=helptext + " The trainer ignores it for an "
                                 "unknown task, or one in a state it does not apply to.")
        sub.add_argument("task_id", metavar="TASK_ID")
        _add_watch_options(sub)
        _add_bootstrap(sub)
        sub.set_defaults(handler=_guarded(_cancel if name == "cancel" else _restart))

    listing = actions.add_parser(
        "list", help="List tasks as the status topic shows them.",
        description="Reads the status topic from the beginning and prints the latest state of every task "
        "(the event with the highest seq), newest task first.",
    )
    listing.add_argument("--status", choices=["pending", "processing", "done", "canceled", "error"],
                         help="Only tasks in this state.")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="At most N tasks (default 50; 0: all).")
    listing.add_argument("--json", action="store_true", help="Print a JSON array of TaskStatus objects instead.")
    listing.add_argument("--timeout", type=float, default=30.0, metavar="S",
                         help="Give up reading the status topic after S seconds (default 30).")
    _add_bootstrap(listing)
    listing.set_defaults(handler=_guarded(_list))

    watch = actions.add_parser(
        "watch", help="Follow one task until it ends, with a progress bar.",
        description="Shows the task's progress (stage, trial, epoch) until it is done (exit 0), ends in "
        "error (1) or is canceled (2); 3 if --timeout passes first. A task that already ended reports "
        "its final state at once.",
    )
    target = watch.add_mutually_exclusive_group(required=True)
    target.add_argument("task_id", nargs="?", metavar="TASK_ID")
    target.add_argument("--idempotency-key", metavar="KEY", help="The task created with this key.")
    watch.add_argument("--timeout", type=float, default=None, metavar="S", help="Give up after S seconds (default: never).")
    _add_bootstrap(watch)
    watch.set_defaults(handler=_guarded(_watch))


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"key\": \"value\"}'")
    return value


def _add_watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--watch", action="store_true",
                        help="Then follow the task until it ends; the exit code tells how it ended.")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="With --watch: give up after S seconds (default: never).")


def _add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default: ES_KAFKA_BOOTSTRAP).")


def _guarded(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CliError as error:
            print(f"{args.command}: {error}", file=sys.stderr)
            return error.code

    return run


# --- shared with `replay` --------------------------------------------------------------------------
def connection(args: argparse.Namespace) -> tuple[str, "TopicRegistry"]:
    """(bootstrap, topics) from --bootstrap / ES_* settings, or CliError."""
    from schemas.settings import Settings

    settings = Settings()
    bootstrap = getattr(args, "bootstrap", None) or settings.kafka_bootstrap
    if not bootstrap:
        raise CliError("no broker to talk to: set ES_KAFKA_BOOTSTRAP or pass --bootstrap HOST:PORT "
                       "(`embedding-studio broker` starts one and prints its address)")
    return bootstrap, settings.topics()


def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The topic's partitions; CliError if the broker does not answer or the topic is missing (sending
    would make brokers that auto-create topics create it with their own partition count)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except KafkaException as error:
        raise CliError(f"no answer from the broker at {bootstrap}: {error.args[0].str()}") from error
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        raise CliError(f"topic {topic} does not exist on {bootstrap}; start the system first (or check ES_TOPIC_PREFIX)")
    return sorted(described.partitions)


def command_key(command) -> str:
    """The commands topic's key: the task for cancel/restart, else the idempotency key (or the
    release id), else the command id."""
    for name in ("task_id", "idempotency_key", "release_id"):
        value = getattr(command, name, None)
        if value:
            return value
    return command.command_id


def send_messages(bootstrap: str, messages: list[tuple[str, str, str]], timeout_s: float = 30.0) -> None:
    """Send (topic, key, JSON value) records with an idempotent producer and wait for every one."""
    from confluent_kafka import Producer

    for topic in {topic for topic, _, _ in messages}:
        topic_partitions(bootstrap, topic)
    failures: list[str] = []

    def delivered(error, message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error.str()}")

    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "client.id": "embedding-studio-cli", "message.timeout.ms": int(timeout_s * 1000),
    })
    for topic, key, value in messages:
        producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=delivered)
    remaining = producer.flush(timeout_s + 5)
    if failures or remaining:
        raise CliError(f"not delivered: {failures or f'{remaining} record(s) unacknowledged after {timeout_s:.0f} s'}")


def send_command(bootstrap: str, topics: "TopicRegistry", command) -> None:
    send_messages(bootstrap, [(topics.commands.name, command_key(command), command.model_dump_json())])


class StatusFeed:
    """The status topic from its first record, through assigned partitions (no group join).
    ``caught_up`` turns true once every partition has been read to its end once."""

    def __init__(self, bootstrap: str, topic: str):
        import uuid

        from confluent_kafka import Consumer, TopicPartition

        self.topic = topic
        partitions = topic_partitions(bootstrap, topic)
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"es-cli-{uuid.uuid4().hex[:12]}",  # never joined: assign() needs a group id
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        })
        # Offset 0 rather than OFFSET_BEGINNING, which costs a look-up per partition on some brokers;
        # auto.offset.reset covers an offset 0 gone to retention.
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self._not_at_end = set(partitions)
        self.unreadable = 0

    @property
    def caught_up(self) -> bool:
        return not self._not_at_end

    def read(self, timeout_s: float = 0.2) -> list["TaskStatus"]:
        from confluent_kafka import KafkaError
        from pydantic import ValidationError

        from schemas.tasks import TaskStatus

        statuses: list[TaskStatus] = []
        for message in self._consumer.consume(500, timeout=timeout_s):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._not_at_end.discard(message.partition())
                elif error.fatal():
                    raise CliError(f"reading {self.topic}: {error.str()}")
                continue
            try:
                statuses.append(TaskStatus.model_validate_json(message.value() or b""))
            except ValidationError:
                self.unreadable += 1
        return statuses

    def close(self) -> None:
        self._consumer.close()


def latest_states(bootstrap: str, topics: "TopicRegistry", timeout_s: float) -> tuple[dict[str, "TaskStatus"], bool]:
    """The highest-seq status of every task on the status topic; (states, complete)."""
    feed = StatusFeed(bootstrap, topics.task_status.name)
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
    bootstrap: str, topics: "TopicRegistry", *, task_id: str | None = None, idempotency_key: str | None = None,
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
    feed = StatusFeed(bootstrap, topics.task_status.name)
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
                bar.set_description_str(_describe(status), refresh=False)
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


def _describe(status: "TaskStatus") -> str:
    progress = status.progress
    parts = [status.task_id[:12], status.status.value, progress.stage]
    if progress.trials:
        parts.append(f"trial {progress.trial}/{progress.trials}")
    if progress.epochs:
        parts.append(f"epoch {progress.epoch}/{progress.epochs}")
    return " · ".join(parts)


# --- handlers --------------------------------------------------------------------------------------
def _create(args: argparse.Namespace) -> int:
    import uuid

    from pydantic import ValidationError

    from schemas.base import describe_validation_error
    from schemas.settings import Settings
    from schemas.tasks import CreateTask

    bootstrap, topics = connection(args)
    command_id = uuid.uuid4().hex
    try:
        command = CreateTask(
            command_id=command_id,
            fine_tuning_method=args.method or Settings().default_fine_tuning_method,
            batch_id=args.batch_id, metadata=args.metadata,
            # Always explicit, so the task can be found by it (a new key is the command id).
            idempotency_key=args.idempotency_key or command_id,
        )
    except ValidationError as error:
        raise CliError(f"invalid command: {describe_validation_error(error)}", 2) from error
    send_command(bootstrap, topics, command)
    print(f"create command {command.command_id} sent to {topics.commands.name}: method "
          f"{command.fine_tuning_method!r}, batch {command.batch_id or '(the open batch, released first)'}")
    print(f"idempotency key: {command.idempotency_key}")
    return follow_if_asked(args, bootstrap, topics, command.idempotency_key)


def follow_if_asked(args: argparse.Namespace, bootstrap: str, topics: "TopicRegistry", idempotency_key: str) -> int:
    """With --watch, follow the task made under ``idempotency_key``; otherwise say how to."""
    if not args.watch:
        print(f"follow it: embedding-studio tasks watch --idempotency-key {idempotency_key}")
        return 0
    return follow(bootstrap, topics, idempotency_key=idempotency_key, timeout_s=args.timeout)


def _cancel(args: argparse.Namespace) -> int:
    from schemas.tasks import CancelTask

    bootstrap, topics = connection(args)
    command = _build(CancelTask, task_id=args.task_id)
    send_command(bootstrap, topics, command)
    print(f"cancel command {command.command_id} for task {command.task_id} sent to {topics.commands.name}")
    return follow(bootstrap, topics, task_id=command.task_id, timeout_s=args.timeout) if args.watch else 0


def _restart(args: argparse.Namespace) -> int:
    from schemas.tasks import RestartTask

    bootstrap, topics = connection(args)
    command = _build(RestartTask, task_id=args.task_id)
    min_seq = 0
    if args.watch:
        # Its present (final) state must not count as the end of the run the restart starts.
        states, _ = latest_states(bootstrap, topics, timeout_s=30.0)
        if command.task_id in states:
            min_seq = states[command.task_id].seq + 1
    send_command(bootstrap, topics, command)
    print(f"restart command {command.command_id} for task {command.task_id} sent to {topics.commands.name}")
    if not args.watch:
        return 0
    return follow(bootstrap, topics, task_id=command.task_id, timeout_s=args.timeout, min_seq=min_seq)


def _build(model, **fields):
    from pydantic import ValidationError

    from schemas.base import describe_validation_error

    try:
        return model(**fields)
    except ValidationError as error:
        raise CliError(f"invalid command: {describe_validation_error(error)}", 2) from error


def _list(args: argparse.Namespace) -> int:
    bootstrap, topics = connection(args)
    states, complete = latest_states(bootstrap, topics, args.timeout)
    rows = [s for s in states.values() if args.status is None or s.status.value == args.status]
    rows.sort(key=lambda s: (s.created_at, s.task_id), reverse=True)
    if args.limit:
        rows = rows[: args.limit]
    if not complete:
        print(f"tasks: {topics.task_status.name} not read to its end within {args.timeout:g} s; the list may "
              "be incomplete", file=sys.stderr)
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in rows], indent=2))
    elif not rows:
        print("no tasks" + (f" with status {args.status}" if args.status else ""))
    else:
        print_table(
            ("TASK", "STATUS", "METHOD", "BATCH", "PROGRESS", "DETAIL", "UPDATED"),
            [(s.task_id, s.status.value, clip(s.fine_tuning_method, 30), s.batch_id or "-",
              f"{s.progress.fraction:.0%} {s.progress.stage}", clip((s.detail or "-").replace("\n", " "), 60),
              s.updated_at.strftime("%Y-%m-%d %H:%M:%S")) for s in rows],
        )
    return 0 if complete else EXIT_TIMEOUT


def _watch(args: argparse.Namespace) -> int:
    bootstrap, topics = connection(args)
    return follow(bootstrap, topics, task_id=args.task_id, idempotency_key=args.idempotency_key,
                  timeout_s=args.timeout)



