"""The search endpoint: answers from the served version and names it, logs each search and the clicks
on it into the clickstream (real broker, Milvus Lite); and `up` serves it over HTTP."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest
from fastapi.testclient import TestClient

from embedding_studio.embedded.system import EmbeddedSystem
from messaging.topics import ensure_topics
from index.indexer import Indexer
from index.milvus_index import MilvusIndex
from ingest.producer import ClickstreamProducer
from schemas.clickstream import parse_clickstream_event
from schemas.settings import Settings
from tests.fixtures.broker import consume
from tests.test_indexer import write_catalog


@pytest.fixture
def served_index(tmp_path, kafka_bootstrap, mlflow_uri, tiny_model_path):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, mlflow_tracking_uri=mlflow_uri, data_dir=tmp_path / "es",
                        topic_prefix=f"s{uuid.uuid4().hex[:10]}", base_model=str(tiny_model_path),
                        items_url=write_catalog(tmp_path / "catalog.jsonl", 50).as_uri(), index_name="items")
    ensure_topics(kafka_bootstrap, settings.topics())
    index = MilvusIndex(str(tmp_path / "milvus.db"), "items")
    indexer = Indexer(settings, index)
    indexer.build_initial()
    indexer.close()
    yield settings, index
    index.close()


def test_a_search_names_its_version_and_its_clicks_reach_the_clickstream(served_index):
    settings, index = served_index
    producer = ClickstreamProducer(settings.kafka_bootstrap, settings.topics())
    from index.api import create_app

    with TestClient(create_app(index, settings.mlflow_tracking_uri, producer)) as client:
        found = client.get("/search", params={"q": "tiger river", "k": 4})
        assert found.status_code == 200, found.text
        body = found.json()
        clicked = body["results"][1]["object_id"]
        assert client.post("/click", json={"session_id": body["session_id"], "object_id": clicked}).status_code == 202
        schema = client.get("/openapi.json").json()
        bad_click = client.post("/click", json={"session_id": "", "object_id": clicked})
        refused = client.get("/search", params={"q": ""})

    assert body["answered_by"]["version"] == 1 and body["answered_by"]["model_uri"] == settings.base_model
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4]
    assert {"/search", "/click"} <= set(schema["paths"]) and refused.status_code == 422
    assert bad_click.status_code == 422 and "session_id" in bad_click.text
    events = [parse_clickstream_event(m.value()) for m in consume(settings.kafka_bootstrap,
                                                                  settings.topics().clickstream.name, 2)]
    search, click = sorted(events, key=lambda e: e.type != "search")
    assert search.session_id == click.session_id == body["session_id"]
    assert search.search_meta == {"index_version": 1, "model_uri": settings.base_model}
    assert [r.object_id for r in search.search_results] == [r["object_id"] for r in body["results"]]
    assert click.object_id == clicked


def test_nothing_served_is_a_503_that_says_so(tmp_path, mlflow_uri):
    from index.api import create_app

    with MilvusIndex(str(tmp_path / "milvus.db"), "empty") as index, \
            TestClient(create_app(index, mlflow_uri)) as client:
        answer = client.get("/search", params={"q": "anything"})

    assert answer.status_code == 503 and "no index version is served yet" in answer.json()["detail"]


@pytest.mark.slow
def test_up_builds_the_first_index_version_and_serves_searches_over_http(tmp_path, kafka_bootstrap, mlflow_uri,
                                                                        tiny_model_path):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, mlflow_tracking_uri=mlflow_uri, data_dir=tmp_path / "es",
                        topic_prefix=f"u{uuid.uuid4().hex[:10]}", base_model=str(tiny_model_path),
                        items_url=write_catalog(tmp_path / "catalog.jsonl", 40).as_uri(), search_port=0,
                        stream_session_timeout_s=2.0, stream_heartbeat_interval_s=0.5)
    with EmbeddedSystem(settings, workers=0, trainer=False) as system:
        deadline = time.monotonic() + 180
        body = None
        while time.monotonic() < deadline and body is None:
            assert not system.problems(), system.problems()
            try:
                with urllib.request.urlopen(f"{system.search_url}/search?q=lion&k=3&log=false", timeout=10) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(1)
    assert body is not None, "the endpoint never answered"
    assert body["answered_by"]["version"] == 1 and len(body["results"]) == 3 and body["session_id"] is None
