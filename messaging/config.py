"""Every librdkafka client configuration of the system, built from settings in this one place.

A process describes its cluster once (``KafkaCluster.from_settings``: bootstrap servers and the
``ES_KAFKA_*`` security settings) and asks it for the configuration of the client it needs:
``producer`` (idempotent, acknowledged by all replicas, keys placed as Faust places them),
``consumer`` (a group member that commits by hand), ``reader`` (assigned partitions, no group) or
``admin``. Options a caller adds for itself go in ``extra`` and win over these defaults.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.settings import Settings

KAFKA_PARTITIONER = "murmur2_random"
"""librdkafka's name for the Java client's partitioner (Faust's rule; random only for null keys, which
the system never sends). ``ingest.partitioner`` is its pure-Python reference."""


@dataclass(frozen=True)
class KafkaCluster:
    """Where the brokers are and how to authenticate to them."""

    bootstrap: str
    security: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap: str | None = None) -> KafkaCluster:
        """``bootstrap`` (the embedded runtime's broker, a --bootstrap flag) wins over the setting."""
        servers = bootstrap or settings.kafka_bootstrap
        if not servers:
            raise ValueError("no Kafka cluster: set ES_KAFKA_BOOTSTRAP")
        return cls(servers, security_config(settings))

    def base(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.security, **(extra or {})}

    def admin(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.base(extra)

    def producer(self, *, max_message_bytes: int, client_id: str | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Idempotent (a retry never duplicates or reorders), acknowledged by every in-sync replica,
        keys on the partitions Faust expects, records as large as the topics accept."""
        config: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": KAFKA_PARTITIONER,
            "message.max.bytes": max_message_bytes,
        }
        if client_id:
            config["client.id"] = client_id
        return self.base({**config, **(extra or {})})

    def consumer(self, group_id: str, *, session_timeout_s: float | None = None,
                 heartbeat_interval_s: float | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A consumer-group member that starts at the oldest record and commits only what it handled."""
        config: dict[str, Any] = {
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
        if session_timeout_s is not None:
            config["session.timeout.ms"] = int(session_timeout_s * 1000)
        if heartbeat_interval_s is not None:
            config["heartbeat.interval.ms"] = int(heartbeat_interval_s * 1000)
        return self.base({**config, **(extra or {})})

    def reader(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A consumer of assigned partitions: no group join (brokers may hold joins for seconds), no
        commits, and an end-of-partition event whenever it reaches a partition's high watermark."""
        return self.base({
            "group.id": f"es-reader-{uuid.uuid4().hex[:12]}",  # never joined: assign() needs a group id
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",  # a start offset gone to retention: the oldest kept
            **(extra or {}),
        })


def as_cluster(target: KafkaCluster | str) -> KafkaCluster:
    """A cluster as given, or bootstrap servers of a cluster without security (tests, tools)."""
    return target if isinstance(target, KafkaCluster) else KafkaCluster(target)


def security_config(settings: Settings) -> dict[str, str]:
    """The librdkafka security properties the ``ES_KAFKA_*`` settings ask for (none for PLAINTEXT)."""
    config: dict[str, str] = {}
    protocol = settings.kafka_security_protocol.upper()
    if protocol != "PLAINTEXT":
        config["security.protocol"] = protocol
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    for key, value in (
        ("sasl.mechanism", settings.kafka_sasl_mechanism),
        ("sasl.username", settings.kafka_sasl_username),
        ("sasl.password", password),
        ("ssl.ca.location", settings.kafka_ssl_ca_location),
        ("ssl.certificate.location", settings.kafka_ssl_certificate_location),
        ("ssl.key.location", settings.kafka_ssl_key_location),
    ):
        if value:
            config[key] = value
    return config


def faust_broker_options(cluster: KafkaCluster) -> dict[str, Any]:
    """The same cluster and credentials as Faust (aiokafka) options: ``broker`` and, when the
    cluster asks for security, ``broker_credentials``."""
    options: dict[str, Any] = {"broker": [f"kafka://{host.strip()}" for host in cluster.bootstrap.split(",")]}
    security = cluster.security
    protocol = security.get("security.protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return options
    import ssl

    import faust

    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=security.get("ssl.ca.location"))
        if security.get("ssl.certificate.location"):
            context.load_cert_chain(security["ssl.certificate.location"], security.get("ssl.key.location"))
    if protocol.startswith("SASL"):
        options["broker_credentials"] = faust.SASLCredentials(
            username=security.get("sasl.username"), password=security.get("sasl.password"),
            mechanism=security.get("sasl.mechanism", "PLAIN"), ssl_context=context,
        )
    else:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options
