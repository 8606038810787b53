from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta, timezone

HELP = "Train a stored batch again, or rebuild a batch from a time range of the raw clickstream."
DESCRIPTION = (
    "Two forms. `replay --batch-id ID` sends a replay_batch command: the trainer fine-tunes that stored "
    "batch again as a new task. `replay --from-time T [--to-time T2]` reads the raw clickstream topic "
    "again for records stamped (Kafka record time) from T up to, not including, T2 (default: now), "
    "sessionizes them with the stream worker's own validation and session rules (ES_SESSION_*, "
    "ES_MAX_EVENT_BYTES), stores the sessions in new batches of the session store (ES_STORE_URL) of at "
    "most ES_BATCH_MAX_SESSIONS sessions each (ordered by their start, then id), closes each with reason "
    "`replay`, announces each (BatchClosed) and asks the trainer to train each (unless --no-train). Edges of the range: sessions still open when the range has been read are closed at the "
    "range end (reason gap, as if the gap had passed there); a session whose search is before T is "
    "dropped as an orphan (nothing to train on), one that goes on after T2 keeps what came before T2. "
    "Invalid records are counted and skipped. Each partition is read up to its first record stamped at "
    "or after T2, or up to its end as it stands while reading. "
    "Idempotent: the range id is derived from the topic, the range, the session rules and "
    "ES_BATCH_MAX_SESSIONS (replay-<hash>), the batches are <range id>-p1, -p2, ..., and each session "
    "keeps its original id with @<range id> appended (the original ids already belong to the live "
    "batches). Replaying a range again reuses its closed batches as they are (same sessions; nothing is "
    "read again) and a replay cut short is completed. Exit codes: 0 done (with "
    "--watch: every task is done), 1 nothing to replay / task error, 2 task canceled, 3 timed out, 4 the "
    "broker or store could not be used."
)

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def register(parser: argparse.ArgumentParser) -> None:
    from embedding_studio.cli.arguments import add_bootstrap, json_object

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--batch-id", metavar="ID", help="Train this stored batch again, as a new task.")
    source.add_argument("--from-time", type=moment, metavar="T",
                        help="Start of the clickstream range: ISO-8601 (UTC unless an offset is given), unix "
                        "seconds, or relative to now: --from-time=-2h (also -30m, -90s, -1d).")
    parser.add_argument("--to-time", type=moment, metavar="T2",
                        help="End of the range, exclusive (same forms; default: now). Only with --from-time.")
    parser.add_argument("--method", metavar="NAME",
                        help="Fine-tuning method; default: ES_DEFAULT_FINE_TUNING_METHOD.")
    parser.add_argument("--metadata", type=json_object, default={}, metavar="JSON",
                        help="A JSON object kept with the task.")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="Same key, same task. Default: a new key for --batch-id; batch:<replay batch id> "
                        "for --from-time, so each replayed batch is trained once however often it is "
                        "replayed; a key given with --from-time gets :<batch id> appended per batch.")
    parser.add_argument("--no-train", action="store_true",
                        help="With --from-time: only build and store the batch; no announcement, no task.")
    parser.add_argument("--watch", action="store_true", help="Follow the training task until it ends.")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="With --watch: give up following after S seconds (default: never).")
    parser.add_argument("--read-timeout", type=float, default=600.0, metavar="S",
                        help="With --from-time: give up reading the range after S seconds (default 600).")
    add_bootstrap(parser)
    parser.set_defaults(handler=_run)


def moment(text: str) -> datetime:
    """ISO-8601 (naive: UTC), unix seconds, or ``-<n><s|m|h|d>`` before now."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return datetime.now(timezone.utc) - timedelta(**{_UNITS[relative.group(2)]: float(relative.group(1))})
    try:
        return datetime.fromtimestamp(float(text), timezone.utc)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO-8601 (2026-01-05T12:00:00Z), unix seconds or -2h") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _run(args: argparse.Namespace) -> int:
    from embedding_studio.cli.errors import CliError

    try:
        if args.batch_id is not None:
            if args.to_time is not None or args.no_train:
                raise CliError("--to-time and --no-train go with --from-time, not --batch-id", 2)
            return _replay_batch(args)
        return _replay_range(args)
    except CliError as error:
        print(f"replay: {error}", file=sys.stderr)
        return error.code


def _replay_batch(args: argparse.Namespace) -> int:
    import uuid

    from embedding_studio.cli.arguments import connection
    from embedding_studio.cli.task_commands import build_command, send_command
    from embedding_studio.cli.task_status import follow_if_asked
    from schemas.tasks import ReplayBatch

    cluster, topics = connection(args)
    command_id = uuid.uuid4().hex
    command = build_command(ReplayBatch, command_id=command_id, batch_id=args.batch_id, fine_tuning_method=args.method,
                       metadata=args.metadata, idempotency_key=args.idempotency_key or command_id)
    send_command(cluster, topics, command)
    print(f"replay_batch command {command.command_id} sent to {topics.commands.name}: batch {command.batch_id}, "
          f"method {command.fine_tuning_method or '(the default)'}")
    print(f"idempotency key: {command.idempotency_key}")
    return follow_if_asked(args, cluster, topics, command.idempotency_key)


def _replay_range(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from embedding_studio.cli.arguments import connection
    from embedding_studio.cli.errors import CliError
    from embedding_studio.cli.task_commands import build_command, send_messages
    from embedding_studio.cli.task_status import follow_if_asked
    from schemas.settings import Settings
    from schemas.tasks import ReplayBatch
    from session_store import open_store, redact_url
    from stream_processors.announcements import batch_closed
    from stream_processors.replay import ReplayError, ReplayRange, replay_range
    from stream_processors.sessionizer import SessionRules

    settings = Settings()
    cluster, topics = connection(args)
    end = args.to_time or datetime.now(timezone.utc)
    try:
        span = ReplayRange(topics.clickstream.name, args.from_time, end)
    except ValueError as error:
        raise CliError(str(error), 2) from error
    rules = SessionRules.from_seconds(settings.session_gap_s, settings.session_max_events,
                                      settings.session_max_duration_s)
    url = settings.resolved_store_url()
    print(f"replaying {span.topic} from {_show(span.start)} to {_show(span.end)} into {redact_url(url)}")
    if args.to_time is None:
        print(f"(the range ends now; to replay exactly this range again, pass --to-time {_show(span.end)})")
    try:
        store = open_store(url)
    except Exception as error:  # noqa: BLE001 - any reason the store cannot be opened is reported as is
        raise CliError(f"cannot open the session store {redact_url(url)}: {error}") from error
    bar = tqdm(total=None, unit=" records", file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.2,
               desc="reading")

    def estimate(total: int | None) -> None:
        bar.total = total or None
        bar.refresh()

    try:
        with store:
            result = replay_range(
                bootstrap=cluster, replay_range=span, store=store, rules=rules,
                max_event_bytes=settings.max_event_bytes, max_sessions=settings.batch_max_sessions, chunk=settings.sessionizer_batch_events,
                timeout_s=args.read_timeout, on_estimate=estimate, on_scanned=bar.update,
            )
    except ReplayError as error:
        raise CliError(str(error)) from error
    finally:
        bar.close()

    stats, batches = result.stats, result.batches
    if result.reused:
        print(f"this range was replayed before: {len(batches)} batch(es), {sum(b.session_count for b in batches)} "
              f"session(s); reused as they are, nothing read again")
        for batch in batches:
            print(f"batch {batch.batch_id}: {batch.session_count} session(s), closed {_show(batch.closed_at)}")
    else:
        invalid = ", ".join(f"{count} {kind}" for kind, count in stats.invalid.most_common()) or "none"
        print(f"read {stats.events_read} event(s) of the range from {stats.partitions} partition(s); "
              f"invalid, skipped: {stats.invalid_events} ({invalid})")
        closed_by = ", ".join(f"{count} {reason}" for reason, count in sorted(stats.closed_by.items())) or "none"
        print(f"sessions: {stats.sessions} (closed by {closed_by}; {stats.closed_at_range_end} still open at the "
              f"range end), {stats.orphans} without a search dropped, {stats.late_events} late event(s), "
              f"{stats.duplicates} duplicate(s)")
        for example in stats.invalid_examples[:3]:
            print(f"  invalid: {example}", file=sys.stderr)
        if not batches:
            print("no session in this range: nothing stored")
            return 1
        print(f"{len(batches)} batch(es) of at most {settings.batch_max_sessions} session(s) "
              f"(ES_BATCH_MAX_SESSIONS); {result.added} session(s) written now")
        for batch in batches:
            print(f"batch {batch.batch_id}: {batch.session_count} session(s) stored, closed (replay)")
    if args.no_train:
        print("--no-train: not announced, no task")
        return 0

    keys = []
    for part, batch in enumerate(batches, start=1):
        key = f"{args.idempotency_key}:{batch.batch_id}" if args.idempotency_key else f"batch:{batch.batch_id}"
        command = build_command(ReplayBatch, batch_id=batch.batch_id, fine_tuning_method=args.method,
                           metadata={"trigger": "replay", "from": span.start.isoformat(), "to": span.end.isoformat(),
                                     "part": part, "parts": len(batches), **args.metadata},
                           idempotency_key=key)
        # The command first: a trainer that trains announced batches on its own uses the same key.
        send_messages(cluster, [
            (topics.commands.name, key, command.model_dump_json()),
            (topics.batches.name, batch.batch_id, batch_closed(batch).model_dump_json()),
        ])
        print(f"batch {batch.batch_id} announced on {topics.batches.name}; replay_batch command sent, "
              f"idempotency key: {key}")
        keys.append(key)
    worst = 0
    for key in keys:  # with --watch, each task in turn: the trainer runs one at a time, in this order
        worst = max(worst, follow_if_asked(args, cluster, topics, key))
    return worst


def _show(moment_: datetime | None) -> str:
    return "-" if moment_ is None else moment_.astimezone(timezone.utc).isoformat(timespec="milliseconds")
