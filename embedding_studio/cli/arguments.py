"""Arguments several commands share, and the Kafka cluster they name (``--bootstrap`` or ES_* settings)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from embedding_studio.cli.errors import CliError

if TYPE_CHECKING:
    from messaging import KafkaCluster
    from schemas.topics import TopicRegistry


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default: ES_KAFKA_BOOTSTRAP).")


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--watch", action="store_true",
                        help="Then follow the task until it ends; the exit code tells how it ended.")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="With --watch: give up after S seconds (default: never).")


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"key\": \"value\"}'")
    return value


def connection(args: argparse.Namespace, *, code: int | None = None) -> tuple[KafkaCluster, TopicRegistry]:
    """(cluster, topics) from --bootstrap / ES_* settings (security included), or CliError (with
    ``code`` when given)."""
    from messaging import KafkaCluster
    from schemas.settings import Settings

    settings = Settings()
    bootstrap = getattr(args, "bootstrap", None) or settings.kafka_bootstrap
    if not bootstrap:
        message = ("no broker to talk to: set ES_KAFKA_BOOTSTRAP or pass --bootstrap HOST:PORT "
                   "(`embedding-studio broker` starts one and prints its address)")
        raise CliError(message) if code is None else CliError(message, code)
    return KafkaCluster.from_settings(settings, bootstrap), settings.topics()


def check_topic(cluster: KafkaCluster, topic: str, *, code: int | None = None) -> list[int]:
    """The topic's partitions, or CliError if the broker does not answer or the topic is missing
    (sending would make brokers that auto-create topics create it with their own partition count)."""
    from messaging import MessagingError, topic_partitions

    try:
        return topic_partitions(cluster, topic)
    except MessagingError as error:
        raise (CliError(str(error)) if code is None else CliError(str(error), code)) from error
