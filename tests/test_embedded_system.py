"""The whole system on one machine starts from settings alone, and every part talks to the others."""

from __future__ import annotations

import time

from embedding_studio.embedded.system import EmbeddedSystem, settings_env
from ingest.producer import ClickstreamProducer
from schemas.clickstream import Interaction, SearchSession, SessionEnd
from schemas.settings import Settings
from session_store import open_store


def test_settings_travel_to_another_process_as_es_variables(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, session_gap_s=5, auto_train=False, store_url="sqlite:///x.db")
    env = settings_env(settings)
    assert env["ES_AUTO_TRAIN"] == "false" and env["ES_SESSION_GAP_S"] == "5.0"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


def test_the_embedded_system_sessionizes_and_batches_without_any_address_given(tmp_path):
    settings = Settings(data_dir=tmp_path / "es", batch_max_sessions=3, auto_train=False,
                        stream_session_timeout_s=2.0, stream_heartbeat_interval_s=0.5, sessionizer_processes=1,
                        search_port=0)
    with EmbeddedSystem(settings, workers=1) as system:
        assert system.settings.kafka_bootstrap == system.bootstrap
        assert system.settings.mlflow_tracking_uri.startswith("http://127.0.0.1:")
        with ClickstreamProducer(system.bootstrap, system.settings.topics()) as producer:
            for n in range(3):
                sid = f"s{n}"
                producer.send_many([
                    SearchSession(session_id=sid, search_query="q", search_meta={},
                                  search_results=[{"object_id": "a", "rank": 1, "meta": {}}]),
                    Interaction(session_id=sid, event_id=f"e{n}", object_id="a", meta={}),
                    SessionEnd(session_id=sid),
                ])
        deadline = time.monotonic() + 60
        with open_store(system.settings.resolved_store_url()) as store:
            while time.monotonic() < deadline and not store.list_batches():
                assert not system.problems(), system.problems()
                time.sleep(0.3)
            closed = [b for b in store.list_batches() if b.closed_at is not None]
            while time.monotonic() < deadline and not closed:
                time.sleep(0.3)
                closed = [b for b in store.list_batches() if b.closed_at is not None]
            assert closed and closed[0].session_count == 3
