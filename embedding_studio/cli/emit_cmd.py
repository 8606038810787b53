from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from schemas.topics import TopicRegistry

HELP = "Send JSON-lines clickstream events from FILE (or - for stdin) through the producer SDK."
DESCRIPTION = (
    "Sends one event per line (blank lines are skipped) to the clickstream topic of a running system "
    "(ES_KAFKA_BOOTSTRAP or --bootstrap; topic names from ES_TOPIC_PREFIX). Invalid lines are reported on "
    "stderr with their line number and skipped; the exit code is 1 if any line was invalid or not delivered."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE|-", help="JSON lines to send; - reads stdin.")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default: ES_KAFKA_BOOTSTRAP).")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="How long to wait for delivery at the end.")
    parser.set_defaults(handler=_emit)


def _emit(args: argparse.Namespace) -> int:
    from schemas.settings import Settings

    settings = Settings()
    bootstrap = args.bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        print("emit: no broker to send to: set ES_KAFKA_BOOTSTRAP or pass --bootstrap HOST:PORT "
              "(`embedding-studio broker` starts one and prints its address)", file=sys.stderr)
        return 2
    registry = settings.topics()
    problem = _missing_topic(bootstrap, registry.clickstream.name)
    if problem:
        print(f"emit: {problem}", file=sys.stderr)
        return 2
    if args.file == "-":
        return _send_lines(sys.stdin, bootstrap, registry, args.timeout)
    try:
        source = open(args.file, encoding="utf-8")
    except OSError as error:
        print(f"emit: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return 2
    with source:
        return _send_lines(source, bootstrap, registry, args.timeout)


def _missing_topic(bootstrap: str, topic: str) -> str | None:
    """Why sending is pointless, or None. Producing to a missing topic would make brokers that
    auto-create topics create it with their own partition count instead of the registry's."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except KafkaException as error:
        return f"no answer from the broker at {bootstrap}: {error.args[0].str()}"
    if topic not in metadata.topics:
        return (f"topic {topic} does not exist on {bootstrap}; start the system first "
                "(or check ES_TOPIC_PREFIX)")
    return None


def _send_lines(source: TextIO, bootstrap: str, registry: TopicRegistry, timeout: float) -> int:
    from ingest.producer import ClickstreamProducer, DeliveryError
    from schemas.base import ContractError

    invalid = undelivered = 0
    producer = ClickstreamProducer(bootstrap, registry, config={"client.id": "embedding-studio-emit"})
    try:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                producer.send(line, context=number)
            except ContractError as error:
                invalid += 1
                print(f"line {number}: {error.reason}", file=sys.stderr)
    finally:
        try:
            producer.close(timeout)
        except DeliveryError as error:
            undelivered = len(error.failures) + error.pending
            for failure in error.failures:
                print(f"line {failure.context}: not delivered: {failure.error.str() if failure.error else '?'}",
                      file=sys.stderr)
            if error.pending:
                print(f"{error.pending} event(s) still unacknowledged after {timeout:.0f} s", file=sys.stderr)
    print(f"{producer.delivered} event(s) delivered to {registry.clickstream.name}, {invalid} invalid line(s), "
          f"{undelivered} undelivered")
    return 1 if invalid or undelivered else 0
