from __future__ import annotations

import argparse

from embedding_studio.cli.tables import clip, print_table

HELP = "Create or migrate the session store, list its batches, show a batch's sessions."
DESCRIPTION = (
    "Work with the session store named by ES_STORE_URL (default: SQLite under ES_DATA_DIR). "
    "`init` creates or migrates its schema (safe to repeat; required once before a Cassandra store is "
    "used), `batches` lists batches newest first, `show` prints the sessions of one batch."
)


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="store_action", metavar="ACTION", required=True)

    init = actions.add_parser(
        "init", help="Create or migrate the store's schema.",
        description="Create the store's tables (and, for Cassandra, the keyspace) or bring them to this "
        "version's schema. Safe to run again; on Cassandra run it from one place at a time.",
    )
    init.set_defaults(handler=_init)

    batches = actions.add_parser(
        "batches", help="List batches, newest first.",
        description="List batches newest first, one row each: id, status, open and close times, "
        "session count (live for an open batch), close reason and release id.",
    )
    batches.add_argument("--status", choices=["open", "closed"], help="Only batches in this state.")
    batches.add_argument("--limit", type=int, default=50, metavar="N", help="At most N batches (default 50).")
    batches.set_defaults(handler=_batches)

    show = actions.add_parser(
        "show", help="Print a batch's sessions, one summary line each.",
        description="Print the batch's record, then one line per session: id, creation time, close "
        "reason, results shown, interactions, irrelevant mark and the query.",
    )
    show.add_argument("batch_id", metavar="BATCH_ID")
    show.add_argument("--limit", type=int, default=20, metavar="N", help="At most N sessions (default 20; 0: all).")
    show.set_defaults(handler=_show)


def _open():
    from schemas.settings import Settings
    from session_store import open_store, redact_url

    url = Settings().resolved_store_url()
    return open_store(url), redact_url(url)


def _init(args: argparse.Namespace) -> int:
    store, shown = _open()
    with store:
        version = store.init_schema()
    print(f"session store {shown}: schema version {version}")
    return 0


def _batches(args: argparse.Namespace) -> int:
    from schemas.sessions import BatchStatus

    store, _ = _open()
    with store:
        records = store.list_batches(status=BatchStatus(args.status) if args.status else None, limit=args.limit)
        rows = [
            (
                r.batch_id,
                r.status.value,
                _when(r.opened_at),
                _when(r.closed_at),
                str(store.count_sessions(r.batch_id) if r.status is BatchStatus.open else r.session_count),
                r.close_reason or "-",
                r.release_id or "-",
            )
            for r in records
        ]
    if not rows:
        print("no batches" + (f" with status {args.status}" if args.status else ""))
        return 0
    print_table(("BATCH", "STATUS", "OPENED", "CLOSED", "SESSIONS", "REASON", "RELEASE"), rows)
    return 0


def _show(args: argparse.Namespace) -> int:
    import itertools
    import sys

    store, _ = _open()
    with store:
        batch = store.get_batch(args.batch_id)
        if batch is None:
            print(f"no batch {args.batch_id!r}", file=sys.stderr)
            return 1
        total = store.count_sessions(args.batch_id)
        print(
            f"batch {batch.batch_id}: {batch.status.value}, {total} sessions, opened {_when(batch.opened_at)}"
            + (f", closed {_when(batch.closed_at)} ({batch.close_reason})" if batch.closed_at else "")
        )
        sessions = store.iter_sessions(args.batch_id)
        shown = 0
        for session in itertools.islice(sessions, args.limit or None):
            shown += 1
            mark = " irrelevant" if session.is_irrelevant else ""
            print(
                f"  {session.session_id}  {_when(session.created_at)}  {session.close_reason:<10}"
                f" {len(session.search_results):>3} results {len(session.events):>3} events{mark}"
                f"  {clip(session.search_query, 60)!r}"
            )
        if shown < total:
            print(f"  ... {total - shown} more (--limit 0 shows all)")
    return 0


def _when(moment) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")



