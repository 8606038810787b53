"""The indexer on the real broker, a real MLflow and Milvus Lite: an announced model becomes the
served index version, atomically, and nothing else changes what is served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from confluent_kafka import Producer

from messaging.topics import ensure_topics
from index.indexer import Indexer
from index.milvus_index import MilvusIndex
from index.search import SearchService
from schemas.base import Contract
from schemas.index import IndexReady, ItemUpsert
from schemas.models import ModelReady
from schemas.settings import Settings
from tests.fixtures.trainer import Feed
from trainer.loaders.base import ItemLoader
from trainer.loaders.local import JsonlCatalogLoader
from simulation.tiny_model import build_tiny_model

WORDS = "apple banana cherry tiger lion zebra river mountain forest rain jacket boot tent stove lamp".split()


def write_catalog(path: Path, n: int) -> Path:
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"item-{i}", "text": f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} "
                                                           f"number {i}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def logged_models(tmp_path_factory, mlflow_uri) -> list[str]:
    """Two tiny models with different weights, stored in MLflow as the trainer stores them (through a
    client of its own: the fluent API's active experiment would leak into other tests)."""
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment(f"index-tests-{uuid.uuid4().hex[:6]}")
    uris = []
    for seed in (1, 2):
        folder = build_tiny_model(tmp_path_factory.mktemp(f"model{seed}") / "model", seed=seed)
        run = client.create_run(experiment)
        client.log_artifacts(run.info.run_id, str(folder), "model")
        client.set_terminated(run.info.run_id)
        uris.append(f"runs:/{run.info.run_id}/model")
    return uris


def model_ready(uri: str, task: str) -> ModelReady:
    return ModelReady(task_id=task, batch_id="b", fine_tuning_method="m", model_uri=uri, run_id=uri.split("/")[1],
                      embedding_dim=64, model_fingerprint=f"fp-{task}", main_metric="ndcg_at_10",
                      metrics={"ndcg_at_10": 0.6}, baseline_metrics={"ndcg_at_10": 0.5})


def send(bootstrap: str, topic: str, event: Contract, key: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=key.encode(), value=event.model_dump_json().encode())
    assert producer.flush(10) == 0


class Running:
    def __init__(self, indexer: Indexer, initial_build: bool = True):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=indexer.run, args=(self.stop,), kwargs={"initial_build": initial_build},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


@pytest.fixture
def setup(tmp_path, kafka_bootstrap, mlflow_uri, tiny_model_path):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, mlflow_tracking_uri=mlflow_uri, data_dir=tmp_path / "es",
        topic_prefix=f"i{uuid.uuid4().hex[:10]}", base_model=str(tiny_model_path),
        items_url=write_catalog(tmp_path / "catalog.jsonl", 300).as_uri(), index_batch_size=32,
        stream_session_timeout_s=2.0, stream_heartbeat_interval_s=0.5, index_name="items",
    )
    ensure_topics(kafka_bootstrap, settings.topics())
    index = MilvusIndex(str(tmp_path / "milvus.db"), "items")
    ready = Feed(kafka_bootstrap, settings.topics().index_ready.name, IndexReady)
    yield settings, index, ready
    ready.close()
    index.close()


def test_a_model_ready_becomes_the_served_version_and_the_old_one_stays_for_rollback(setup, logged_models):
    settings, index, ready = setup
    running = Running(Indexer(settings, index))
    try:
        (first,) = ready.wait(lambda events: events[:1], 120, "the initial version from the starting model")
        assert first.version == 1 and first.model_uri == settings.base_model and first.item_count == 300

        send(settings.kafka_bootstrap, settings.topics().model_ready.name, model_ready(logged_models[0], "task-1"), "task-1")
        second = ready.wait(lambda events: events[1] if len(events) > 1 else None, 120, "IndexReady v2")
    finally:
        running.close()

    assert (second.version, second.model_uri, second.task_id, second.item_count) == (2, logged_models[0], "task-1", 300)
    assert second.previous_version == 1 and second.seconds > 0
    answer = SearchService(index, settings.mlflow_tracking_uri).search("tiger river", 5)
    assert answer.version.version == 2 and answer.version.model_uri == logged_models[0] and len(answer.hits) == 5
    assert index.rollback().version == 1
    assert SearchService(index, settings.mlflow_tracking_uri).search("tiger river", 5).version.version == 1


def test_a_duplicate_model_ready_changes_nothing_and_upserts_reach_the_served_version(setup, logged_models):
    settings, index, ready = setup
    topics = settings.topics()
    running = Running(Indexer(settings, index), initial_build=False)
    try:
        for _ in range(2):
            send(settings.kafka_bootstrap, topics.model_ready.name, model_ready(logged_models[0], "t"), "t")
        ready.wait(lambda events: events, 120, "IndexReady")
        send(settings.kafka_bootstrap, topics.item_upserts.name,
             ItemUpsert(object_id="item-new", text="a brand new zebra lamp"), "item-new")
        send(settings.kafka_bootstrap, topics.item_upserts.name, ItemUpsert(object_id="item-3", deleted=True), "item-3")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = dict(index.iter_items(index.served()))
            if "item-new" in stored and "item-3" not in stored:
                break
            time.sleep(0.5)
        time.sleep(2)  # the duplicate, had it been refreshed, would have published by now
        ready.poll()
    finally:
        running.close()

    assert [e.version for e in ready.events] == [1]
    assert stored["item-new"] == "a brand new zebra lamp" and "item-3" not in stored
    hits = SearchService(index, settings.mlflow_tracking_uri).search("a brand new zebra lamp", 3).hits
    assert hits[0].object_id == "item-new"


class FailingLoader(ItemLoader):
    """The catalog service going down halfway through a refresh."""

    def __init__(self, source: ItemLoader, fail_after: int):
        self.source, self.calls, self.fail_after = source, 0, fail_after

    def list_ids(self):
        return self.source.list_ids()

    def load(self, object_ids):
        self.calls += 1
        if self.calls > self.fail_after:
            raise ConnectionError("the catalog service is down")
        return self.source.load(object_ids)


def test_a_refresh_that_fails_midway_leaves_the_old_version_serving_and_publishes_nothing(setup, logged_models):
    settings, index, ready = setup
    catalog = JsonlCatalogLoader(Path(settings.items_url.removeprefix("file://")))
    indexer = Indexer(settings, index, loader=catalog)
    try:
        assert indexer.build_initial().version.version == 1
        indexer.loader = indexer.refresher.loader = FailingLoader(catalog, fail_after=3)
        assert indexer.on_model_ready(model_ready(logged_models[0], "t")) is None
    finally:
        indexer.close()

    served = index.served()
    assert served.version == 1 and served.model_uri == settings.base_model
    assert [v.version for v in index.versions()] == [1]  # the half-built version is gone
    ready.poll()
    assert [e.version for e in ready.events] == [1]


def test_searches_during_a_refresh_never_see_a_mixed_or_empty_answer(setup, logged_models):
    settings, index, _ = setup
    indexer = Indexer(settings, index)
    indexer.build_initial()
    service = SearchService(index, settings.mlflow_tracking_uri)
    seen: list[tuple[int, tuple[str, ...]]] = []
    done = threading.Event()

    def search_forever() -> None:
        while not done.is_set():
            answer = service.search("lion forest", 10)
            seen.append((answer.version.version, tuple(h.object_id for h in answer.hits)))

    searcher = threading.Thread(target=search_forever)
    searcher.start()
    try:
        indexer.on_model_ready(model_ready(logged_models[1], "t2"))
        time.sleep(0.5)
    finally:
        done.set()
        searcher.join(30)
        indexer.close()

    expected = {v: tuple(h.object_id for h in service_answer(index, settings, v)) for v in (1, 2)}
    assert {version for version, _ in seen} == {1, 2}, "searches ran before and after the switch"
    assert all(ids == expected[version] for version, ids in seen)
    switch = [version for version, _ in seen]
    assert switch == sorted(switch), "once the new version answers, the old one never does again"


def service_answer(index: MilvusIndex, settings: Settings, number: int):
    from index.models import embedder, encode

    version = next(v for v in index.versions() if v.version == number)
    model = embedder(version.model_uri, settings.mlflow_tracking_uri, "query")
    return index.search(encode(model, ["lion forest"]).tolist(), 10, version=version)[0].hits


def test_a_refresh_killed_midway_leaves_the_old_version_serving(tmp_path, milvus_lite_server, logged_models,
                                                               tiny_model_path, mlflow_uri):
    name = f"k_{uuid.uuid4().hex[:8]}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ES_")},
           "ES_MILVUS_URI": milvus_lite_server.uri, "ES_INDEX_NAME": name, "ES_MLFLOW_TRACKING_URI": mlflow_uri,
           "ES_ITEMS_URL": write_catalog(tmp_path / "catalog.jsonl", 4000).as_uri(), "ES_INDEX_BATCH_SIZE": "16",
           "ES_DATA_DIR": str(tmp_path / "es")}
    command = [sys.executable, "-c", "import sys; from embedding_studio.cli import main; sys.exit(main())",
               "index", "refresh", "--model"]
    subprocess.run([*command, str(tiny_model_path)], env=env, check=True, capture_output=True, timeout=300)
    index = MilvusIndex(milvus_lite_server.uri, name)
    try:
        before = index.served()
        refresh = subprocess.Popen([*command, logged_models[0]], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            for line in refresh.stdout:  # killed once it has written part of the new version
                if line.strip().startswith("160/"):
                    break
            assert len(index.versions()) == 2
        finally:
            os.killpg(refresh.pid, signal.SIGKILL)
            refresh.wait()

        assert index.served() == before
        leftover = index.versions()[-1]
        assert not leftover.complete
        answer = SearchService(index, mlflow_uri).search("tiger", 3)
        assert answer.version == before and len(answer.hits) == 3

        subprocess.run([*command, logged_models[0]], env=env, check=True, capture_output=True, timeout=300)
        assert index.served().model_uri == logged_models[0]
        assert leftover.version not in {v.version for v in index.versions()}  # pruned by the next refresh

        rolled = subprocess.run([*command[:3], "index", "rollback"], env=env, capture_output=True, text=True,
                                timeout=120)
        assert rolled.returncode == 0 and f"v{before.version} served again" in rolled.stdout, rolled.stdout
        assert index.served().version == before.version
    finally:
        index.close()
