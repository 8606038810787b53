"""Sending operators' commands to the trainer and the stream worker, each confirmed by the broker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedding_studio.cli.arguments import check_topic
from embedding_studio.cli.errors import CliError

if TYPE_CHECKING:
    from messaging import KafkaCluster
    from schemas.topics import TopicRegistry


def build_command(model: type, **fields: Any):
    """``model(**fields)``, or CliError (exit 2) saying what is invalid."""
    from pydantic import ValidationError

    from schemas.base import describe_validation_error

    try:
        return model(**fields)
    except ValidationError as error:
        raise CliError(f"invalid command: {describe_validation_error(error)}", 2) from error


def command_key(command) -> str:
    """The commands topic's key: the task for cancel/restart, else the idempotency key (or the
    release id), else the command id."""
    for name in ("task_id", "idempotency_key", "release_id"):
        value = getattr(command, name, None)
        if value:
            return value
    return command.command_id


def send_messages(cluster: KafkaCluster, messages: list[tuple[str, str, str]], timeout_s: float = 30.0) -> None:
    """Send (topic, key, JSON value) records and wait until the broker has every one (CliError if not)."""
    from messaging import ConfirmedProducer, NotDelivered
    from schemas.settings import Settings

    for topic in {topic for topic, _, _ in messages}:
        check_topic(cluster, topic)
    with ConfirmedProducer(cluster, max_message_bytes=Settings().max_record_bytes, client_id="embedding-studio-cli",
                           message_timeout_s=timeout_s) as producer:
        try:
            producer.send_all((topic, key, value.encode()) for topic, key, value in messages)
        except NotDelivered as error:
            raise CliError(str(error)) from error


def send_command(cluster: KafkaCluster, topics: TopicRegistry, command) -> None:
    send_messages(cluster, [(topics.commands.name, command_key(command), command.model_dump_json())])
