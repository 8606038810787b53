"""The whole path on real parts: click events sent with the SDK → the stream worker (its own process)
sessionizes and batches them into the store → the closed batch is announced → the trainer fine-tunes
→ statuses stream → ModelReady arrives → `embedding-studio embed` loads the model and embeds."""

from __future__ import annotations

import json

from embedding_studio.cli import main
from ingest.producer import ClickstreamProducer
from schemas.clickstream import Interaction, SearchSession, SessionEnd
from schemas.tasks import TaskState
from tests.fixtures.trainer import clickstream_batch, start_trainer
from tests.test_stream_end_to_end import worker_factory  # noqa: F401 - a fixture

SESSIONS = 240


def click_events(prefix: str) -> list:
    events = []
    for session in clickstream_batch(prefix, SESSIONS):
        events.append(SearchSession(session_id=session.session_id, search_query=session.search_query,
                                    search_meta={}, search_results=session.search_results))
        events += [Interaction(session_id=session.session_id, event_id=e.event_id, object_id=e.object_id)
                   for e in session.events]
        events.append(SessionEnd(session_id=session.session_id))
    return events


def test_clicks_become_a_better_model_that_embeds(kafka_bootstrap, topics, mlflow_uri, tmp_path, worker_factory,
                                                   test_plugins_path, tiny_model_path, monkeypatch, capsys):
    worker = worker_factory(batch_max_sessions=SESSIONS).start()
    harness = start_trainer(kafka_bootstrap, mlflow_uri, tmp_path / "trainer", test_plugins_path, tiny_model_path,
                            topic_prefix=topics.prefix, store_url=f"sqlite:///{worker.store_path}",
                            default_fine_tuning_method="End To End Method")
    try:
        with ClickstreamProducer(kafka_bootstrap, topics) as producer:
            producer.send_many(click_events("e2e"))

        final = harness.final_status(lambda s: s.fine_tuning_method == "End To End Method", timeout_s=180)
        assert final.status == TaskState.done, final.detail
        batch = harness.store.get_batch(final.batch_id)
        assert batch.session_count == SESSIONS
        assert final.detail.startswith("better model: "), final.detail
        (ready,) = harness.models.wait(lambda events: events, what="ModelReady")
        assert ready.batch_id == final.batch_id
        worker.assert_alive()
    finally:
        harness.close()
        worker.stop()

    texts = tmp_path / "texts.txt"
    texts.write_text("apple red small\ntiger\n")
    monkeypatch.setenv("ES_MLFLOW_TRACKING_URI", mlflow_uri)
    capsys.readouterr()
    assert main(["embed", "--model", ready.model_uri, "--input", str(texts)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["apple red small", "tiger"]
    assert all(len(line["vector"]) == ready.embedding_dim for line in lines)


def test_a_task_without_a_batch_releases_the_open_batch_and_trains_it(
        kafka_bootstrap, topics, mlflow_uri, tmp_path, worker_factory, test_plugins_path, tiny_model_path):
    from schemas.tasks import CreateTask

    worker = worker_factory(batch_max_sessions=10_000).start()
    harness = start_trainer(kafka_bootstrap, mlflow_uri, tmp_path / "trainer", test_plugins_path, tiny_model_path,
                            topic_prefix=topics.prefix, store_url=f"sqlite:///{worker.store_path}",
                            default_fine_tuning_method="End To End Method")
    try:
        with ClickstreamProducer(kafka_bootstrap, topics) as producer:
            producer.send_many(click_events("release"))

        def all_stored() -> bool:
            batch = harness.store.get_open_batch()
            return batch is not None and harness.store.count_sessions(batch.batch_id) == SESSIONS

        harness.statuses.wait(lambda _: all_stored(), 120, "the sessions to be stored in the open batch")
        create = CreateTask(fine_tuning_method="End To End Method", idempotency_key="release-me")
        harness.send(topics.commands.name, create, "release-me")

        final = harness.final_status(lambda s: s.idempotency_key == "release-me")
        assert final.status == TaskState.done, final.detail
        batch = harness.store.get_batch(final.batch_id)
        assert batch.close_reason == "release" and batch.session_count == SESSIONS
        worker.assert_alive()
    finally:
        harness.close()
        worker.stop()
