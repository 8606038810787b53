"""The trainer's and the indexer's own code paths feed their metrics: a task status the trainer
publishes (to the real broker) and an index refresh (real MLflow, Milvus Lite) show in /metrics."""

from __future__ import annotations

import json
import uuid

from prometheus_client import REGISTRY

from embedding_studio.cli import main
from messaging.topics import ensure_topics
from index.indexer import Indexer
from index.milvus_index import MilvusIndex
from observability.exposition import start_metrics_server
from schemas.base import utc_now
from schemas.settings import Settings
from schemas.tasks import TaskState, TaskStatus
from tests.test_search_api import served_index  # noqa: F401 - a fixture
from trainer.publisher import TaskEventPublisher


def _catalog(path, n: int):
    path.write_text("".join(json.dumps({"id": f"item-{i}", "text": f"item number {i}"}) + "\n" for i in range(n)))
    return path


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_status_the_trainer_publishes_counts_in_its_task_metrics(kafka_bootstrap):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"o{uuid.uuid4().hex[:10]}")
    ensure_topics(kafka_bootstrap, settings.topics())
    publisher = TaskEventPublisher(kafka_bootstrap, settings.topics())
    before = _value("es_trainer_task_transitions_total", state="error")
    created = utc_now()
    for seq, state in enumerate((TaskState.pending, TaskState.processing, TaskState.error)):
        publisher.status(TaskStatus(task_id="t-hook", status=state, seq=seq, fine_tuning_method="m",
                                    created_at=created))
    publisher.close()
    assert _value("es_trainer_task_transitions_total", state="error") == before + 1
    assert _value("es_trainer_task_duration_seconds_count", state="error") >= 1


def test_index_refreshes_count_by_outcome_and_set_the_served_version(tmp_path, kafka_bootstrap, mlflow_uri,
                                                                   tiny_model_path, monkeypatch, capsys):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, mlflow_tracking_uri=mlflow_uri, data_dir=tmp_path / "es",
        topic_prefix=f"o{uuid.uuid4().hex[:10]}", base_model=str(tiny_model_path),
        items_url=_catalog(tmp_path / "catalog.jsonl", 40).as_uri(), index_batch_size=32, index_name="items",
    )
    ensure_topics(kafka_bootstrap, settings.topics())
    served, failed = _value("es_index_refreshes_total", outcome="served"), _value("es_index_refreshes_total",
                                                                                   outcome="failed")
    with MilvusIndex(str(tmp_path / "milvus.db"), "items") as index:
        indexer = Indexer(settings, index)
        try:
            assert indexer.build_initial() is not None
            assert indexer.refresh("runs:/no-such-run/model") is None
        finally:
            indexer.close()
    assert _value("es_index_refreshes_total", outcome="served") == served + 1
    assert _value("es_index_refreshes_total", outcome="failed") == failed + 1
    assert _value("es_index_served_version") == 1 and _value("es_index_served_items") == 40

    # What `status` prints of it, scraped over HTTP from this process's endpoint.
    with start_metrics_server(settings, "indexer"):
        monkeypatch.setenv("ES_DATA_DIR", str(settings.data_dir))
        monkeypatch.delenv("ES_KAFKA_BOOTSTRAP", raising=False)
        assert main(["status"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("index"))
    assert line == (f"index     v1 served, 40 items; refreshes {served + failed + 2:.0f} "
                    f"(failed {failed + 1:.0f}, served {served + 1:.0f})")


def test_the_search_endpoint_counts_its_answers_per_model_and_names_that_model_for_the_quality_monitor(
        served_index):
    from fastapi.testclient import TestClient

    from index.api import create_app
    from ingest.producer import ClickstreamProducer
    from schemas.clickstream import parse_clickstream_event, served_by
    from tests.fixtures.broker import consume

    settings, index = served_index
    model = settings.base_model
    before = _value("es_search_requests_total", model=model)
    latency_before = _value("es_search_request_duration_seconds_count")
    producer = ClickstreamProducer(settings.kafka_bootstrap, settings.topics())
    with TestClient(create_app(index, settings.mlflow_tracking_uri, producer)) as client:
        for query in ("tiger river", "rain jacket"):
            assert client.get("/search", params={"q": query, "k": 3}).status_code == 200
    assert _value("es_search_requests_total", model=model) == before + 2
    assert _value("es_search_request_duration_seconds_count") == latency_before + 2
    logged = [parse_clickstream_event(m.value()) for m in consume(settings.kafka_bootstrap,
                                                                  settings.topics().clickstream.name, 2)]
    assert [served_by(search.search_meta) for search in logged] == [model, model]
