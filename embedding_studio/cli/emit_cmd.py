from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from messaging import KafkaCluster
    from schemas.topics import TopicRegistry

HELP = "Send JSON-lines clickstream events from FILE (or - for stdin) through the producer SDK."
DESCRIPTION = (
    "Sends one event per line (blank lines are skipped) to the clickstream topic of a running system "
    "(ES_KAFKA_BOOTSTRAP or --bootstrap; topic names from ES_TOPIC_PREFIX). Invalid lines are reported on "
    "stderr with their line number and skipped; the exit code is 1 if any line was invalid or not delivered."
)


def register(parser: argparse.ArgumentParser) -> None:
    from embedding_studio.cli.arguments import add_bootstrap

    parser.add_argument("file", metavar="FILE|-", help="JSON lines to send; - reads stdin.")
    add_bootstrap(parser)
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="How long to wait for delivery at the end.")
    parser.set_defaults(handler=_emit)


def _emit(args: argparse.Namespace) -> int:
    from embedding_studio.cli.arguments import check_topic, connection
    from embedding_studio.cli.errors import CliError

    try:
        cluster, registry = connection(args, code=2)
        check_topic(cluster, registry.clickstream.name, code=2)
    except CliError as error:
        print(f"emit: {error}", file=sys.stderr)
        return error.code
    if args.file == "-":
        return _send_lines(sys.stdin, cluster, registry, args.timeout)
    try:
        source = open(args.file, encoding="utf-8")
    except OSError as error:
        print(f"emit: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return 2
    with source:
        return _send_lines(source, cluster, registry, args.timeout)


def _send_lines(source: TextIO, cluster: KafkaCluster, registry: TopicRegistry, timeout: float) -> int:
    from ingest.producer import ClickstreamProducer, DeliveryError
    from schemas.base import ContractError

    invalid = undelivered = 0
    producer = ClickstreamProducer(cluster, registry, config={"client.id": "embedding-studio-emit"})
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
