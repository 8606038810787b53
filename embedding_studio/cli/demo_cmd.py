from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from ingest.producer import Event

Arrival: TypeAlias = "tuple[int, int, Event]"  # partition, offset, event

HELP = "Start the embedded system, send an emulated clickstream through the SDK and watch it arrive."
DESCRIPTION = (
    "Starts the embedded runtime (a tansu broker unless ES_KAFKA_BOOTSTRAP is set), sends --sessions emulated "
    "search sessions with the producer SDK, reads the clickstream topic back with a plain consumer, prints each "
    "event as it arrives and checks every session landed whole on the partition Faust expects."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=20, help="Emulated search sessions to send.")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the emulator (same seed, same sessions).")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="Give up waiting after this long.")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from embedding_studio.embedded.runtime import EmbeddedRuntime
    from ingest.emulator import emulate_sessions
    from ingest.producer import ClickstreamProducer
    from schemas.settings import Settings

    settings = Settings()
    # A prefix of this run's own: on a shared broker the topic may already hold older demos.
    run = uuid.uuid4().hex[:6]
    sessions = list(emulate_sessions(args.sessions, seed=args.seed, session_prefix=f"demo-{run}"))
    expected = sum(len(events) for events in sessions)
    started = time.monotonic()
    with EmbeddedRuntime(settings) as runtime:
        topic = runtime.topics.clickstream
        where = "embedded tansu" if runtime.broker else "ES_KAFKA_BOOTSTRAP"
        print(f"broker {runtime.bootstrap} ({where}); topic {topic.name} with {topic.partitions} partitions")
        consumer = _consumer_from_beginning(runtime.bootstrap, topic.name, topic.partitions)
        seen: list[Arrival] = []
        try:
            with ClickstreamProducer(runtime.bootstrap, runtime.topics,
                                     config={"client.id": "embedding-studio-demo"}) as producer:
                for events in sessions:
                    producer.send_many(events)
                    producer.flush(10)
                    seen += _show_arrivals(consumer, run, wait_s=0.05)
            deadline = time.monotonic() + args.timeout
            while len(seen) < expected and time.monotonic() < deadline:
                seen += _show_arrivals(consumer, run, wait_s=0.2)
        finally:
            consumer.close()
        return _summary(seen, expected, topic.partitions, time.monotonic() - started)


def _consumer_from_beginning(bootstrap: str, topic: str, partitions: int) -> Consumer:
    from confluent_kafka import Consumer, TopicPartition

    # Assigned, not subscribed: no group join, which tansu holds for seconds. From offset 0, reset to
    # the earliest kept if retention removed it: the same as OFFSET_BEGINNING without its look-up delay.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "embedding-studio-demo",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return consumer


def _show_arrivals(consumer: Consumer, run: str, wait_s: float) -> list[Arrival]:
    from schemas.clickstream import parse_clickstream_event

    arrived = []
    for message in consumer.consume(500, timeout=wait_s):
        if message.error() is not None:
            print(f"  consumer: {message.error()}")
            continue
        event = parse_clickstream_event(message.value())
        if run not in event.session_id:
            continue
        arrived.append((message.partition(), message.offset(), event))
        print(f"  p{message.partition()} @{message.offset():<4} {event.session_id}  {_describe(event)}")
    return arrived


def _describe(event: Event) -> str:
    if event.type == "search":
        return f"search {event.search_query!r} → {len(event.search_results)} results"
    if event.type == "interaction":
        return f"{event.event_type} {event.object_id}"
    return {"irrelevant": "marked irrelevant", "session_end": "session end"}[event.type]


def _summary(seen: list[Arrival], expected: int, partitions: int, elapsed: float) -> int:
    from ingest.partitioner import partition_for

    kinds = Counter(event.type for _, _, event in seen)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for partition, _, event in seen:
        partitions_of[event.session_id].add(partition)
    split = [s for s, used in partitions_of.items() if len(used) > 1]
    misplaced = [s for s, used in partitions_of.items() if used != {partition_for(s, partitions)}]
    print(f"{len(seen)} of {expected} events arrived in {elapsed:.1f} s: "
          + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())))
    print(f"{len(partitions_of)} sessions over {len({p for p, _, _ in seen})} partitions; "
          f"split sessions: {len(split)}; sessions off the partition Faust expects: {len(misplaced)}")
    return 0 if len(seen) == expected and not split and not misplaced else 1
