from __future__ import annotations

import argparse
import json
import sys

from embedding_studio.cli.arguments import add_bootstrap as _add_bootstrap
from embedding_studio.cli.arguments import add_watch_options as _add_watch_options
from embedding_studio.cli.arguments import connection, json_object
from embedding_studio.cli.errors import EXIT_CANCELED, EXIT_DONE, EXIT_ERROR, EXIT_TIMEOUT, guarded
from embedding_studio.cli.tables import clip, print_table
from embedding_studio.cli.task_commands import build_command, send_command
from embedding_studio.cli.task_status import follow, follow_if_asked, latest_states

# The exit codes are part of this command's interface.
__all__ = ["EXIT_CANCELED", "EXIT_DONE", "EXIT_ERROR", "EXIT_TIMEOUT", "register"]

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
    create.set_defaults(handler=guarded(_create))

    for name, helptext in (("cancel", "Send a CancelTask command."),
                           ("restart", "Send a RestartTask command (a task that ended in error or canceled).")):
        sub = actions.add_parser(name, help=helptext, description=helptext + " The trainer ignores it for an "
                                 "unknown task, or one in a state it does not apply to.")
        sub.add_argument("task_id", metavar="TASK_ID")
        _add_watch_options(sub)
        _add_bootstrap(sub)
        sub.set_defaults(handler=guarded(_cancel if name == "cancel" else _restart))

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
    listing.set_defaults(handler=guarded(_list))

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
    watch.set_defaults(handler=guarded(_watch))


# --- handlers --------------------------------------------------------------------------------------
def _create(args: argparse.Namespace) -> int:
    import uuid

    from schemas.settings import Settings
    from schemas.tasks import CreateTask

    cluster, topics = connection(args)
    command_id = uuid.uuid4().hex
    command = build_command(
        CreateTask, command_id=command_id, fine_tuning_method=args.method or Settings().default_fine_tuning_method,
        batch_id=args.batch_id, metadata=args.metadata,
        # Always explicit, so the task can be found by it (a new key is the command id).
        idempotency_key=args.idempotency_key or command_id,
    )
    send_command(cluster, topics, command)
    print(f"create command {command.command_id} sent to {topics.commands.name}: method "
          f"{command.fine_tuning_method!r}, batch {command.batch_id or '(the open batch, released first)'}")
    print(f"idempotency key: {command.idempotency_key}")
    return follow_if_asked(args, cluster, topics, command.idempotency_key)


def _cancel(args: argparse.Namespace) -> int:
    from schemas.tasks import CancelTask

    cluster, topics = connection(args)
    command = build_command(CancelTask, task_id=args.task_id)
    send_command(cluster, topics, command)
    print(f"cancel command {command.command_id} for task {command.task_id} sent to {topics.commands.name}")
    return follow(cluster, topics, task_id=command.task_id, timeout_s=args.timeout) if args.watch else 0


def _restart(args: argparse.Namespace) -> int:
    from schemas.tasks import RestartTask

    cluster, topics = connection(args)
    command = build_command(RestartTask, task_id=args.task_id)
    min_seq = 0
    if args.watch:
        # Its present (final) state must not count as the end of the run the restart starts.
        states, _ = latest_states(cluster, topics, timeout_s=30.0)
        if command.task_id in states:
            min_seq = states[command.task_id].seq + 1
    send_command(cluster, topics, command)
    print(f"restart command {command.command_id} for task {command.task_id} sent to {topics.commands.name}")
    if not args.watch:
        return 0
    return follow(cluster, topics, task_id=command.task_id, timeout_s=args.timeout, min_seq=min_seq)


def _list(args: argparse.Namespace) -> int:
    cluster, topics = connection(args)
    states, complete = latest_states(cluster, topics, args.timeout)
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
    cluster, topics = connection(args)
    return follow(cluster, topics, task_id=args.task_id, idempotency_key=args.idempotency_key,
                  timeout_s=args.timeout)



