"""The Kafka plumbing every process shares (messaging/), against the real broker of the session."""

from __future__ import annotations

import threading
import uuid

import faust
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from embedding_studio.cli import main
from embedding_studio.embedded.ports import free_port
from messaging import (
    CommittingConsumer,
    ConfirmedProducer,
    EventReader,
    KafkaCluster,
    NotDelivered,
    TopicMissing,
    TopicReader,
    faust_broker_options,
    topic_partitions,
)
from schemas.settings import Settings
from schemas.tasks import ReleaseBatch

SECURE = dict(kafka_bootstrap="broker-1:9093,broker-2:9093", kafka_security_protocol="SASL_SSL",
              kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="es", kafka_sasl_password="s3cret")


def new_topic(bootstrap: str, partitions: int) -> str:
    name = f"m{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the topic is created
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(10)
    return name


def test_every_client_config_carries_the_security_settings():
    cluster = KafkaCluster.from_settings(Settings(**SECURE))
    expected = {"bootstrap.servers": "broker-1:9093,broker-2:9093", "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "es", "sasl.password": "s3cret"}
    for config in (cluster.admin(), cluster.producer(max_message_bytes=1 << 20), cluster.consumer("g"),
                   cluster.reader()):
        assert expected.items() <= config.items(), config
    assert KafkaCluster.from_settings(Settings(kafka_bootstrap="b:9092")).admin() == {"bootstrap.servers": "b:9092"}


def test_the_faust_worker_gets_the_same_credentials():
    options = faust_broker_options(KafkaCluster.from_settings(Settings(**{**SECURE, "kafka_security_protocol": "SASL_PLAINTEXT"})))
    assert options["broker"] == ["kafka://broker-1:9093", "kafka://broker-2:9093"]
    credentials = options["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials) and credentials.username == "es"
    assert faust_broker_options(KafkaCluster("b:9092")) == {"broker": ["kafka://b:9092"]}


def test_the_configuration_listing_hides_the_sasl_password(monkeypatch, capsys):
    monkeypatch.setenv("ES_KAFKA_SASL_PASSWORD", "s3cret")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "ES_KAFKA_SASL_PASSWORD=" in out and "s3cret" not in out


def test_the_producer_defaults_place_keys_as_faust_does_and_wait_for_every_replica():
    config = KafkaCluster("b:9092").producer(max_message_bytes=4 << 20)
    assert config["partitioner"] == "murmur2_random" and config["acks"] == "all" and config["enable.idempotence"]
    assert config["message.max.bytes"] == 4 << 20


def test_the_reader_reads_every_partition_to_its_end_even_when_records_travel_in_batches(kafka_bootstrap):
    topic = new_topic(kafka_bootstrap, 3)
    # linger: many records per batch, where some brokers' ListOffsets answers fall short of the end
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 50})
    sent = {(f"k{i}".encode(), f"v{i}".encode()) for i in range(600)}
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0
    with TopicReader(kafka_bootstrap, topic) as reader:
        assert not reader.caught_up
        read = [(m.key(), m.value()) for chunk in reader.until_caught_up(30) for m in chunk]
        assert reader.caught_up and reader.partitions == [0, 1, 2]
    assert sorted(read) == sorted(sent)  # every record, once


def test_a_reader_of_an_empty_topic_is_caught_up_without_records(kafka_bootstrap):
    topic = new_topic(kafka_bootstrap, 2)
    with TopicReader(kafka_bootstrap, topic) as reader:
        assert [m for chunk in reader.until_caught_up(30) for m in chunk] == []
        assert reader.caught_up


def test_an_event_reader_parses_what_it_can_and_counts_the_rest(kafka_bootstrap):
    topic = new_topic(kafka_bootstrap, 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, value=ReleaseBatch(release_id="r-1").model_dump_json().encode())
    producer.produce(topic, value=b"{not json")
    assert producer.flush(10) == 0
    with EventReader(kafka_bootstrap, topic, ReleaseBatch) as events:
        while not events.caught_up:
            events.poll()
        assert [e.release_id for e in events.events] == ["r-1"] and events.unreadable == 1


def test_a_missing_topic_is_reported_not_created(kafka_bootstrap):
    topic = f"missing{uuid.uuid4().hex[:8]}"
    with pytest.raises(TopicMissing, match=f"topic {topic} does not exist"):
        TopicReader(kafka_bootstrap, topic)
    with pytest.raises(TopicMissing):
        topic_partitions(kafka_bootstrap, topic)


def test_a_confirmed_send_returns_once_acknowledged_and_raises_when_no_broker_takes_it(kafka_bootstrap):
    topic = new_topic(kafka_bootstrap, 1)
    with ConfirmedProducer(kafka_bootstrap, max_message_bytes=1 << 20) as producer:
        producer.send(topic, "k", b"v")
    with TopicReader(kafka_bootstrap, topic) as reader:
        assert [m.value() for chunk in reader.until_caught_up(30) for m in chunk] == [b"v"]
    nowhere = ConfirmedProducer(f"127.0.0.1:{free_port()}", max_message_bytes=1 << 20, attempts=2,
                                message_timeout_s=1.0)
    with pytest.raises(NotDelivered, match="was not acknowledged by the broker after 2 attempt"):
        nowhere.send(topic, "k", b"v", what="the probe")
    with pytest.raises(NotDelivered, match="not delivered"):
        nowhere.send_all([(topic, "k", b"v")])


def test_the_consume_loop_commits_only_what_was_handled(kafka_bootstrap):
    topic = new_topic(kafka_bootstrap, 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in (b"one", b"two", b"three"):
        producer.produce(topic, value=value)
    assert producer.flush(10) == 0
    group = f"g{uuid.uuid4().hex[:8]}"
    handled: list[bytes] = []

    def handle_until_two(message) -> None:
        if message.value() == b"two":
            raise RuntimeError("the handler failed")
        handled.append(message.value())

    consumer = CommittingConsumer(kafka_bootstrap, group, [topic], session_timeout_s=2, heartbeat_interval_s=0.5)
    with pytest.raises(RuntimeError, match="the handler failed"):
        consumer.run(handle_until_two, threading.Event())
    assert handled == [b"one"]

    stop = threading.Event()

    def handle_until_three(message) -> None:
        handled.append(message.value())
        if message.value() == b"three":
            stop.set()

    CommittingConsumer(kafka_bootstrap, group, [topic], session_timeout_s=2, heartbeat_interval_s=0.5).run(
        handle_until_three, stop)
    assert handled == [b"one", b"two", b"three"]  # the failed record again, the handled one not
