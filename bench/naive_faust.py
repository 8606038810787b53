"""The baseline of ``bench.ingest``: the sessionizer written as a plain per-event Faust agent.

Each event is parsed, its session's state read from a SQLite store, the same rules applied
(``stream_processors.sessionizer``) and the state — plus the session once closed — written back:
one store read and one store write per event. Runs for ``BENCH_SECONDS`` after its first event and
writes ``{"events", "seconds"}`` to ``BENCH_RESULT``. Configured through the same ES_* variables.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faust

from schemas.base import ContractError, utc_now
from schemas.clickstream import parse_clickstream_event
from schemas.settings import Settings
from session_store import open_store
from stream_processors.batcher import new_batch_id
from stream_processors.sessionizer import Arrival, SessionRules, apply_events


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

    @app.agent(raw, concurrency=1)
    async def sessionize(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            if not progress["first"]:
                progress["first"] = time.monotonic()
            try:
                parsed = parse_clickstream_event(event.value)
            except ContractError:
                continue
            sid = parsed.session_id
            state = store.load_open_sessions([sid]).get(sid)
            outcome = apply_events(state, [Arrival(parsed, event.message.offset)], session_id=sid,
                                   partition=event.message.partition, now=utc_now(), rules=rules)
            if outcome.state is not None:
                store.save_open_sessions([outcome.state])
            if outcome.closed is not None:
                store.put_sessions(batch_id, [outcome.closed])
            progress["events"] += 1
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
