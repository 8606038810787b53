"""The baseline of ``bench.ingest``: the best a Faust agent does with the same rules and store.

The agent reads with ``stream.take_events`` (batches of up to ``BENCH_TAKE`` records, or what came
within half a second), parses each event with the contract's own JSON validator, groups the batch
by session, loads the touched states in ONE store call, applies the same rules
(``stream_processors.sessionizer``), and writes the states in ONE call and the closed sessions in
ONE call — the same batching the sessionizer loop does, so the difference left is Faust's
per-record path. Runs for ``BENCH_SECONDS`` after its first event and writes
``{"events", "seconds"}`` to ``BENCH_RESULT``. Configured through the same ES_* variables.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faust

from schemas.base import utc_now
from schemas.settings import Settings
from session_store import open_store
from stream_processors.batcher import new_batch_id
from stream_processors.raw_events import check_raw_event
from stream_processors.sessionizer import SessionRules, apply_events


def main() -> None:
    settings = Settings()
    topics = settings.topics()
    seconds = float(os.environ["BENCH_SECONDS"])
    result = Path(os.environ["BENCH_RESULT"])
    store = open_store(settings.resolved_store_url())
    batch_id = new_batch_id(utc_now())
    store.open_batch(batch_id, utc_now())
    rules = SessionRules.from_seconds(settings.session_gap_s, settings.session_max_events, settings.session_max_duration_s)

    app = faust.App(
        f"{topics.prefix}.naive", broker=f"kafka://{settings.kafka_bootstrap}", store="memory://",
        web_enabled=False, topic_allow_declare=False, topic_disable_leader=True, autodiscover=False,
        consumer_auto_offset_reset="earliest", broker_session_timeout=settings.stream_session_timeout_s,
        broker_heartbeat_interval=settings.stream_heartbeat_interval_s,
        datadir=str(Path(settings.data_dir) / "naive-faust"),
    )
    raw = app.topic(topics.clickstream.name, key_serializer="raw", value_serializer="raw",
                    partitions=topics.clickstream.partitions)
    progress = {"events": 0, "first": 0.0, "last": 0.0}

    take = int(os.environ.get("BENCH_TAKE", "10000"))

    @app.agent(raw, concurrency=1)
    async def sessionize(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(take, within=0.5):
            if not progress["first"]:
                progress["first"] = time.monotonic()
            by_session: dict[str, list] = {}
            partition_of: dict[str, int] = {}
            for event in events:
                message = event.message
                parsed = check_raw_event(message.key, message.value, settings.max_event_bytes)
                if type(parsed) is str:
                    continue
                by_session.setdefault(parsed.session_id, []).append((parsed, message.offset, None))
                partition_of.setdefault(parsed.session_id, message.partition)
            states = store.load_open_sessions(by_session)
            changed, closed = [], []
            now = utc_now()
            for sid, arrivals in by_session.items():
                outcome = apply_events(states.get(sid), arrivals, session_id=sid, partition=partition_of[sid],
                                       now=now, rules=rules)
                if outcome.state is not None:
                    changed.append(outcome.state)
                if outcome.closed is not None:
                    closed.append(outcome.closed)
            if closed:
                store.put_sessions(batch_id, closed)
            store.save_open_sessions(changed)
            progress["events"] += len(events)
            progress["last"] = time.monotonic()

    @app.timer(0.5)
    async def report() -> None:
        if not progress["first"]:
            return
        elapsed = progress["last"] - progress["first"]
        result.write_text(json.dumps({"events": progress["events"], "seconds": elapsed}))
        # Done after the time allowed, or when the events ran out before it.
        if elapsed >= seconds or time.monotonic() - progress["last"] > 3:
            os._exit(0)

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
