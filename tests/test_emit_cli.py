"""`embedding-studio emit`: JSON lines in, events on the clickstream topic; bad lines reported by
number and counted, the good ones still sent."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from embedding_studio.cli import main
from simulation.emulator import emulate
from schemas.topics import TopicRegistry
from tests.fixtures.broker import consume, consume_all


@pytest.fixture
def system(monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, topics: TopicRegistry) -> TopicRegistry:
    """A running system as emit sees it: a bootstrap and topic names in the environment."""
    monkeypatch.setenv("ES_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("ES_TOPIC_PREFIX", topics.prefix)
    return topics


def _lines(events: list) -> list[str]:
    return [event.model_dump_json() for event in events]


def test_a_file_with_one_bad_line_sends_the_rest_and_fails(
    tmp_path: Path, system: TopicRegistry, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _lines(list(emulate(1, seed=5))[:3])
    missing_object = json.dumps({"type": "interaction", "session_id": "s", "event_id": "e"})
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join([good[0], "", missing_object, good[1], "   ", good[2]]) + "\n")

    code = main(["emit", str(source)])

    out, err = capsys.readouterr()
    assert code == 1
    assert "line 3: interaction.object_id: Field required" in err
    assert "line 1" not in err and "line 4" not in err
    assert "3 event(s) delivered" in out and "1 invalid line(s)" in out and "0 undelivered" in out
    values = sorted(m.value().decode() for m in consume(kafka_bootstrap, system.clickstream.name, 3))
    assert values == sorted(good)


def test_stdin_with_only_valid_lines_exits_zero(
    monkeypatch: pytest.MonkeyPatch, system: TopicRegistry, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _lines(list(emulate(2, seed=9)))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(good) + "\n"))

    assert main(["emit", "-"]) == 0

    assert f"{len(good)} event(s) delivered" in capsys.readouterr().out
    assert len(consume(kafka_bootstrap, system.clickstream.name, len(good))) == len(good)


def test_every_invalid_line_is_numbered_and_counted(
    tmp_path: Path, system: TopicRegistry, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"type": "purchase", "session_id": "s"}\nnot json\n{"type": "session_end", "session_id": ""}\n')

    assert main(["emit", str(source)]) == 1

    out, err = capsys.readouterr()
    assert "line 1: <event>: Input tag 'purchase'" in err
    assert "line 2: <event>: Invalid JSON" in err
    assert "line 3: session_end.session_id: String should have at least 1 character" in err
    assert "0 event(s) delivered" in out and "3 invalid line(s)" in out
    assert consume_all(kafka_bootstrap, system.clickstream.name) == []


def test_without_a_bootstrap_it_says_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ES_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env with a bootstrap in it
    (tmp_path / "events.jsonl").write_text("")

    assert main(["emit", "events.jsonl"]) == 2

    err = capsys.readouterr().err
    assert "ES_KAFKA_BOOTSTRAP" in err and "--bootstrap" in err


def test_a_missing_topic_is_reported_instead_of_auto_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ES_TOPIC_PREFIX", "nobody-created-this")
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(_lines(list(emulate(1)))) + "\n")

    assert main(["emit", str(source), "--bootstrap", kafka_bootstrap]) == 2

    assert "topic nobody-created-this.clickstream.events does not exist" in capsys.readouterr().err


def test_an_unreadable_file_is_reported(system: TopicRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emit", str(tmp_path / "absent.jsonl")]) == 2

    assert "cannot read" in capsys.readouterr().err
