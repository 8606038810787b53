"""What an operator sees: metrics endpoints on the embedded system (`up`) with real counts, `status`
printing them, search quality per serving model from closed sessions, and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import timedelta

from confluent_kafka import Producer
from prometheus_client import REGISTRY

from embedding_studio.cli import main
from embedding_studio.cli.status_cmd import print_metrics_endpoints
from embedding_studio.embedded.system import EmbeddedSystem
from ingest.partitioner import KAFKA_PARTITIONER
from ingest.producer import ClickstreamProducer
from observability.exposition import announced_endpoints
from observability.logs import configure_logging, log_context
from observability.metrics import INDEX_REFRESHES
from observability.search_quality import QualityTracker, judge, render_chart
from observability.summary import scrape, search_quality
from observability.tasks import TaskObserver
from schemas.base import utc_now
from schemas.clickstream import Interaction, MarkIrrelevant, SearchSession, SessionEnd
from schemas.sessions import ClosedSession
from schemas.settings import Settings
from schemas.tasks import TaskProgress, TaskState, TaskStatus
from trainer.publisher import TaskEventPublisher

OLD, NEW = "models:/shop/1", "models:/shop/2"
RESULTS = [{"object_id": f"item-{n}", "rank": n, "meta": {}} for n in range(1, 6)]


def _session(sid: str, model: str, clicks: list[str], irrelevant: bool = False) -> list:
    events = [SearchSession(session_id=sid, search_query=f"query {sid}", search_meta={"model_uri": model},
                            search_results=RESULTS)]
    events += [Interaction(session_id=sid, event_id=f"{sid}-{n}", object_id=o, meta={}) for n, o in enumerate(clicks)]
    if irrelevant:
        events.append(MarkIrrelevant(session_id=sid))
    return [*events, SessionEnd(session_id=sid)]


def _traffic() -> list[list]:
    """The old model: every session clicks the top result. The new one: half the sessions click the
    second result, the other half click nothing and one of them says nothing was relevant."""
    sessions = [_session(f"old-{n}", OLD, ["item-1"]) for n in range(4)]
    sessions += [_session(f"new-{n}", NEW, ["item-2"]) for n in range(2)]
    sessions += [_session("new-2", NEW, [], irrelevant=True), _session("new-3", NEW, [])]
    return sessions


def _closed(sid: str, model: str, clicks: list[tuple[str, int]], irrelevant: bool = False) -> ClosedSession:
    now = utc_now()
    return ClosedSession(
        session_id=sid, search_query="q", search_meta={"model_uri": model}, search_results=RESULTS,
        created_at=now, closed_at=now, close_reason="end", is_irrelevant=irrelevant,
        events=[{"event_id": f"{sid}-{o}", "object_id": o, "created_at": now + timedelta(seconds=s), "meta": {}}
                for o, s in clicks])


def test_a_session_is_judged_by_its_first_click_position_among_the_results_in_rank_order():
    later_click_first_listed = _closed("s", OLD, [("item-1", 5), ("item-3", 1)])
    judged = judge(later_click_first_listed)
    assert (judged.model, judged.clicked, judged.reciprocal_rank, judged.abandoned) == (OLD, True, 1 / 3, False)
    nothing = judge(_closed("t", NEW, [], irrelevant=True))
    assert (nothing.clicked, nothing.reciprocal_rank, nothing.irrelevant, nothing.abandoned) == (False, 0.0, True, True)
    unnamed = judge(_closed("u", OLD, []).model_copy(update={"search_meta": {}}))
    assert unnamed.model == "unknown"


def test_the_tracker_counts_a_session_once_and_draws_a_chart(tmp_path):
    tracker = QualityTracker(window_s=60)
    assert tracker.add(_closed("once", "models:/chart/1", [("item-1", 1)]))
    assert not tracker.add(_closed("once", "models:/chart/1", [("item-1", 1)]))
    tracker.add(_closed("other", "models:/chart/2", []))
    assert tracker.totals["models:/chart/1"].sessions == 1 and tracker.totals["models:/chart/2"].abandonment == 1.0
    assert REGISTRY.get_sample_value("es_search_sessions_total", {"model": "models:/chart/1"}) == 1.0
    path = render_chart(tracker, tmp_path / "quality.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_task_statuses_become_task_states_durations_and_training_steps():
    observer = TaskObserver()
    created = utc_now()
    steps_before = REGISTRY.get_sample_value("es_trainer_training_steps_total") or 0.0
    done_before = REGISTRY.get_sample_value("es_trainer_task_duration_seconds_count", {"state": "done"}) or 0.0
    tasks_before = {s: REGISTRY.get_sample_value("es_trainer_tasks", {"state": s}) or 0.0 for s in TaskState}

    def tasks(state: TaskState) -> float:  # tasks in that state, other tests' tasks of this process aside
        return REGISTRY.get_sample_value("es_trainer_tasks", {"state": state}) - tasks_before[state]

    def status(seq: int, state: TaskState, step: int = 0) -> TaskStatus:
        return TaskStatus(task_id="t-obs", status=state, seq=seq, fine_tuning_method="m", created_at=created,
                          updated_at=created + timedelta(seconds=seq), progress=TaskProgress(step=step, steps=100))

    observer.observe(status(0, TaskState.pending))
    assert tasks(TaskState.pending) == 1
    observer.observe(status(1, TaskState.processing, step=0))
    observer.observe(status(2, TaskState.processing, step=40))
    observer.observe(status(2, TaskState.processing, step=40))  # repeated: ignored
    assert REGISTRY.get_sample_value("es_trainer_training_steps_total") - steps_before == 40
    assert REGISTRY.get_sample_value("es_trainer_training_steps_per_second") > 0
    observer.observe(status(3, TaskState.done, step=40))
    assert tasks(TaskState.processing) == 0 and tasks(TaskState.pending) == 0
    assert tasks(TaskState.done) == 1
    assert REGISTRY.get_sample_value("es_trainer_task_duration_seconds_count", {"state": "done"}) == done_before + 1


def test_json_log_lines_parse_and_carry_the_ids_they_are_about():
    sink = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(Settings(log_format="json"), process="trainer", stream=sink, force=True)
    try:
        log = logging.getLogger("test.observability")
        with log_context(task_id="t-1", batch_id="b-1"):
            log.info("training %s", "started")
            log.warning("session refused", extra={"session_id": "s-9"})
        log.info("outside")
    finally:
        root.handlers[:], root.level = handlers, level  # pytest's own capture handlers back
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["training started", "session refused", "outside"]
    assert lines[0]["task_id"] == "t-1" and lines[0]["batch_id"] == "b-1" and lines[0]["process"] == "trainer"
    assert lines[1]["session_id"] == "s-9" and lines[1]["level"] == "WARNING"
    assert "task_id" not in lines[2]


def _wait_for(condition, system, what: str, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert not system.problems(), system.problems()
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen")


def test_the_embedded_system_serves_real_counts_and_search_quality_per_model(tmp_path, capsys, monkeypatch):
    settings = Settings(data_dir=tmp_path / "es", auto_train=False, clickstream_partitions=2,
                        stream_session_timeout_s=2.0, stream_heartbeat_interval_s=0.5, sessionizer_processes=1,
                        batch_max_sessions=5, quality_chart_interval_s=0.5, metrics_probe_interval_s=0.5,
                        log_format="json")
    # The trainer's endpoint runs in this (pytest) process and serves its default registry, where an
    # in-process indexer of an earlier test may have left refresh series: a trainer process has none.
    INDEX_REFRESHES.clear()
    with EmbeddedSystem(settings, workers=1, trainer=True, indexer=False, search=False) as system:
        print_metrics_endpoints(system, expected=2)  # what `up` prints
        printed = capsys.readouterr().out
        endpoints = {e.role: e for e in announced_endpoints(system.settings.data_dir)}
        worker, trainer = endpoints["worker"], endpoints["trainer"]
        assert f"metrics  worker   {worker.url}" in printed and f"metrics  trainer  {trainer.url}" in printed

        traffic = _traffic()
        with ClickstreamProducer(system.bootstrap, system.settings.topics()) as producer:
            for events in traffic:
                producer.send_many(events)
        raw = Producer({"bootstrap.servers": system.bootstrap, "partitioner": KAFKA_PARTITIONER})
        raw.produce(system.settings.topics().clickstream.name, key=b"broken", value=b"{not json")
        raw.flush(10)
        del raw  # released before the broker stops: no reconnect noise after the test
        sent = sum(len(events) for events in traffic) + 1

        def judged():
            result = scrape([worker.url])
            return result if result.total("es_search_sessions_total") == len(traffic) else None

        result = _wait_for(judged, system, "every closed session judged")
        result = _wait_for(lambda: (r := scrape([worker.url])).total("es_stream_events_in_total") == sent and r,
                           system, "every event counted")
        assert result.total("es_stream_dead_letters_total", reason="invalid") == 1
        assert result.total("es_stream_sessions_closed_total", reason="end") == len(traffic)
        assert result.total("es_stream_batches_announced_total") == 1  # 8 sessions: one batch of 5 closed
        assert result.total("es_stream_open_batch_sessions") == 3
        assert set(result.by_label("es_stream_consumer_lag", "partition")) == {"0", "1"}
        quality = {q.model: q for q in search_quality(result)}
        assert (quality[OLD].sessions, quality[OLD].ctr, quality[OLD].mrr) == (4, 1.0, 1.0)
        assert (quality[NEW].sessions, quality[NEW].ctr, quality[NEW].mrr) == (4, 0.5, 0.25)
        assert (quality[NEW].irrelevant_rate, quality[NEW].abandonment) == (0.25, 0.5)

        publisher = TaskEventPublisher(system.bootstrap, system.settings.topics())
        publisher.status(TaskStatus(task_id="t-status", status=TaskState.processing, seq=1, batch_id="b-x",
                                    fine_tuning_method="m", created_at=utc_now(),
                                    progress=TaskProgress(stage="training", fraction=0.4)))
        publisher.close()
        monkeypatch.setenv("ES_DATA_DIR", str(system.settings.data_dir))
        monkeypatch.setenv("ES_KAFKA_BOOTSTRAP", system.bootstrap)
        assert main(["status", "--timeout", "20"]) == 0
        status = capsys.readouterr().out
        assert "tasks     1 on es.tasks.status, latest:" in status
        assert any(line.split()[:4] == ["t-status", "processing", "40%", "training"] for line in status.splitlines())
        assert f"events in {sent}," in status and "dead letters 1 (invalid 1)" in status
        assert "sessions closed 8 (end 8)" in status and "open batch 3 sessions" in status
        assert any(line.startswith("trainer   tasks ") for line in status.splitlines())
        assert not any(line.startswith("index") for line in status.splitlines())  # no indexer runs
        rows = [line.split() for line in status.splitlines() if line.split()[:1] in ([OLD], [NEW])]
        # In the order the models went live, each against the one before: the new model's MRR fell.
        assert [row[:4] for row in rows] == [[OLD, "4", "1.000", "1.000"], [NEW, "4", "0.500", "0.250"]]
        assert " ".join(rows[1][6:]) == "CTR -0.500, MRR -0.750 DROP"

        chart = system.settings.data_dir / "search-quality.png"
        _wait_for(chart.exists, system, "the search-quality chart written")
        assert chart.read_bytes()[:4] == b"\x89PNG"
        worker_log = (system.logs_dir / "worker-0.log").read_text().splitlines()
    records = [json.loads(line) for line in worker_log if line.startswith("{")]
    assert any(r.get("batch_id") and "announced batch" in r["message"] for r in records)
    assert any(r["process"] == "sessionizer-1" for r in records)
