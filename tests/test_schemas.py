"""The contracts: what each event, command and record accepts, and how it refuses the rest.

Every refusal must name the field at fault, because the message is what a producer's developer
sees (in a ContractError from the SDK, or in a dead letter's reason).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from embedding_studio.cli import SUBCOMMANDS, main
from schemas.base import Contract, ContractError, describe_validation_error
from schemas.clickstream import Interaction, MarkIrrelevant, SearchSession, parse_clickstream_event
from schemas.sessions import ClosedSession, OpenSession
from schemas.tasks import parse_task_command
from schemas.topics import contract_types

NOW = "2026-01-01T12:00:00+00:00"
RESULTS = [{"object_id": "a", "rank": 1, "meta": {"text": "red shoes"}}, {"object_id": "b", "rank": 2}]
SEARCH = {"type": "search", "session_id": "s1", "search_query": "red shoes", "search_results": RESULTS}
INTERACTION = {"type": "interaction", "session_id": "s1", "event_id": "e1", "object_id": "a"}

# One valid example per contract, in its JSON form, with only what it requires (plus a
# discriminator where it has one).
EXAMPLES: dict[str, dict[str, Any]] = {
    "SearchSession": SEARCH,
    "Interaction": INTERACTION,
    "MarkIrrelevant": {"type": "irrelevant", "session_id": "s1"},
    "SessionEnd": {"type": "session_end", "session_id": "s1"},
    "CreateTask": {"command": "create", "fine_tuning_method": "Default Fine Tuning Method"},
    "CancelTask": {"command": "cancel", "task_id": "t1"},
    "RestartTask": {"command": "restart", "task_id": "t1"},
    "ReleaseBatch": {"command": "release_batch", "release_id": "r1"},
    "ReplayBatch": {"command": "replay_batch", "batch_id": "b1"},
    "TaskStatus": {"task_id": "t1", "status": "processing", "seq": 3, "fine_tuning_method": "m",
                   "created_at": NOW},
    "BatchClosed": {"batch_id": "b1", "session_count": 10, "opened_at": NOW, "closed_at": NOW,
                    "close_reason": "size"},
    "ModelReady": {"task_id": "t1", "batch_id": "b1", "fine_tuning_method": "m", "model_uri": "runs:/r/model",
                   "run_id": "r", "embedding_dim": 384, "model_fingerprint": "ab" * 32, "main_metric": "ndcg_at_10",
                   "metrics": {"ndcg_at_10": 0.6}, "baseline_metrics": {"ndcg_at_10": 0.5}},
    "StoredSession": {"session_id": "s1", "search_query": "q", "search_results": RESULTS, "created_at": NOW,
                      "closed_at": NOW, "close_reason": "gap", "batch_id": "b1"},
    "ClosedSession": {"session_id": "s1", "search_query": "q", "search_results": RESULTS, "created_at": NOW,
                      "closed_at": NOW, "close_reason": "end"},
    "BatchRecord": {"batch_id": "b1", "status": "open", "opened_at": NOW},
    "DeadLetter": {"reason": "bad", "source_topic": "es.clickstream.events", "source_partition": 0,
                   "source_offset": 12, "failed_at": NOW, "key": "s1", "value": "{"},
    "OpenSession": {"session_id": "s1", "partition": 3, "first_event_at": NOW, "last_event_at": NOW,
                    "last_seen_at": NOW},
    "IndexReady": {"index_name": "es_items", "version": 2, "collection": "es_items__v00002",
                   "model_uri": "runs:/r/model", "item_count": 120, "seconds": 3.5},
    "ItemUpsert": {"object_id": "item-7", "text": "a waterproof jacket"},
}

CONTRACTS: dict[str, type[Contract]] = {
    model.__name__: model for model in [*contract_types(), ClosedSession, OpenSession]
}
CLICKSTREAM = {"SearchSession", "Interaction", "MarkIrrelevant", "SessionEnd"}
COMMANDS = {"CreateTask", "CancelTask", "RestartTask", "ReleaseBatch", "ReplayBatch"}


def refusal(name: str, data: dict[str, Any] | str) -> str:
    """The reason the contract ``name`` gives for refusing ``data``, read the way consumers read it."""
    raw = data if isinstance(data, str) else json.dumps(data)
    if name in CLICKSTREAM or name in COMMANDS:
        parse = parse_clickstream_event if name in CLICKSTREAM else parse_task_command
        with pytest.raises(ContractError) as refused:
            parse(raw)
        return refused.value.reason
    with pytest.raises(ValidationError) as refused:
        CONTRACTS[name].model_validate_json(raw)
    return describe_validation_error(refused.value)


def parse(name: str, data: dict[str, Any]) -> BaseModel:
    if name in CLICKSTREAM:
        return parse_clickstream_event(json.dumps(data))
    if name in COMMANDS:
        return parse_task_command(json.dumps(data))
    return CONTRACTS[name].model_validate_json(json.dumps(data))


def test_every_contract_has_an_example() -> None:
    assert set(CONTRACTS) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_valid_example_parses_and_round_trips_through_json(name: str) -> None:
    parsed = parse(name, EXAMPLES[name])

    assert type(parsed).__name__ == name
    assert type(parsed).model_validate_json(parsed.model_dump_json()) == parsed


def _required(name: str) -> list[tuple[str, str]]:
    return [(name, field) for field, info in CONTRACTS[name].model_fields.items() if info.is_required()]


@pytest.mark.parametrize(("name", "field"), [pair for name in sorted(EXAMPLES) for pair in _required(name)])
def test_a_missing_required_field_is_named(name: str, field: str) -> None:
    data = {k: v for k, v in EXAMPLES[name].items() if k != field}

    reason = refusal(name, data)

    assert field in reason and "Field required" in reason


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_unknown_field_is_refused_by_name(name: str) -> None:
    reason = refusal(name, {**EXAMPLES[name], "sesion_id": "typo"})

    assert "sesion_id" in reason and "Extra inputs are not permitted" in reason


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_newer_schema_version_is_refused(name: str) -> None:
    reason = refusal(name, {**EXAMPLES[name], "schema_version": CONTRACTS[name].SCHEMA_VERSION + 1})

    assert "schema_version" in reason and "newer" in reason


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("SearchSession", {"search_results": [{"object_id": "a", "rank": "top"}]}, "search_results.0.rank"),
        ("SearchSession", {"search_query": 42}, "search_query"),
        ("SearchSession", {"search_results": {"a": 1}}, "search_results"),
        ("Interaction", {"created_at": "yesterday"}, "created_at"),
        ("Interaction", {"meta": ["not", "a", "mapping"]}, "meta"),
        ("TaskStatus", {"seq": "third"}, "seq"),
        ("TaskStatus", {"status": "sleeping"}, "status"),
        ("BatchClosed", {"close_reason": "boredom"}, "close_reason"),
        ("ModelReady", {"embedding_dim": 0}, "embedding_dim"),
        ("OpenSession", {"partition": -1}, "partition"),
    ],
)
def test_a_wrong_type_or_value_is_refused_with_the_field_path(name: str, change: dict, field: str) -> None:
    reason = refusal(name, {**EXAMPLES[name], **change})

    assert field in reason


@pytest.mark.parametrize("empty", ["", "   "])
@pytest.mark.parametrize(
    ("name", "field"),
    [("SearchSession", "session_id"), ("Interaction", "event_id"), ("Interaction", "object_id"),
     ("CancelTask", "task_id"), ("StoredSession", "batch_id")],
)
def test_an_empty_identifier_is_refused(name: str, field: str, empty: str) -> None:
    reason = refusal(name, {**EXAMPLES[name], field: empty})

    assert field in reason and "at least 1 character" in reason


def test_a_result_shown_twice_in_one_search_is_refused() -> None:
    results = [{"object_id": "a", "rank": 1}, {"object_id": "b", "rank": 2}, {"object_id": "a", "rank": 3}]

    reason = refusal("SearchSession", {**SEARCH, "search_results": results})

    assert "search_results" in reason and "'a' appears twice" in reason


def test_an_unknown_event_type_is_refused_naming_the_known_ones() -> None:
    reason = refusal("SearchSession", {**SEARCH, "type": "purchase"})

    assert "'purchase'" in reason and "'search'" in reason and "'interaction'" in reason


def test_an_event_without_type_is_refused_naming_the_discriminator() -> None:
    reason = refusal("SearchSession", {k: v for k, v in SEARCH.items() if k != "type"})

    assert "'type'" in reason


def test_an_unknown_command_is_refused() -> None:
    reason = refusal("CancelTask", {"command": "delete", "task_id": "t1"})

    assert "'delete'" in reason and "'cancel'" in reason


@pytest.mark.parametrize("raw", ["{", "", "not json", '{"type": "search",}'])
def test_invalid_json_is_refused_as_such(raw: str) -> None:
    assert refusal("SearchSession", raw).startswith("<event>: Invalid JSON")


@pytest.mark.parametrize("event_type", ["Click", "1click", "add-to-cart", "x" * 33, ""])
def test_an_event_type_outside_the_pattern_is_refused(event_type: str) -> None:
    reason = refusal("Interaction", {**INTERACTION, "event_type": event_type})

    assert "event_type" in reason


@pytest.mark.parametrize("event_type", ["click", "add_to_cart", "view2", "x" * 32])
def test_an_event_type_inside_the_pattern_is_kept(event_type: str) -> None:
    assert parse("Interaction", {**INTERACTION, "event_type": event_type}).event_type == event_type


def test_a_naive_timestamp_is_taken_as_utc() -> None:
    event = parse("Interaction", {**INTERACTION, "created_at": "2026-03-01T10:30:00"})

    assert event.created_at == datetime(2026, 3, 1, 10, 30, tzinfo=timezone.utc)


def test_an_offset_timestamp_is_converted_to_utc() -> None:
    event = parse("Interaction", {**INTERACTION, "created_at": "2026-03-01T12:30:00+02:00"})

    assert event.created_at == datetime(2026, 3, 1, 10, 30, tzinfo=timezone.utc)
    assert event.created_at.utcoffset() == timedelta(0)


def test_a_unix_timestamp_in_seconds_is_accepted() -> None:
    event = parse("Interaction", {**INTERACTION, "created_at": 1_772_361_000})

    assert event.created_at == datetime(2026, 3, 1, 10, 30, tzinfo=timezone.utc)


def test_timestamps_default_to_now_in_utc() -> None:
    before = datetime.now(timezone.utc)
    event = MarkIrrelevant(session_id="s1")

    assert before <= event.created_at <= datetime.now(timezone.utc)


def test_parsed_events_are_immutable() -> None:
    event = Interaction(session_id="s1", event_id="e1", object_id="a")

    with pytest.raises(ValidationError):
        event.object_id = "b"  # type: ignore[misc]


def test_a_search_keeps_ranks_exactly_as_given() -> None:
    event = SearchSession.model_validate({**SEARCH, "search_results": [
        {"object_id": "a", "rank": 0}, {"object_id": "b", "rank": 0.5}, {"object_id": "c", "rank": 17}]})

    assert [r.rank for r in event.search_results] == [0, 0.5, 17]


def test_the_union_adapters_choose_the_contract_by_discriminator() -> None:
    assert isinstance(parse_clickstream_event(SEARCH), SearchSession)
    assert isinstance(parse_clickstream_event(json.dumps(INTERACTION).encode()), Interaction)
    assert type(parse_task_command(EXAMPLES["ReleaseBatch"])).__name__ == "ReleaseBatch"


# --- command line -----------------------------------------------------------------------------------


def test_schemas_export_writes_one_json_schema_per_contract(tmp_path, capsys) -> None:
    assert main(["schemas", "export", str(tmp_path / "out")]) == 0

    written = {p.name for p in (tmp_path / "out").iterdir()}
    expected = {f"{m.__name__}.v{m.SCHEMA_VERSION}.schema.json" for m in contract_types()}
    expected |= {"ClickstreamEvent.v1.schema.json", "TaskCommand.v1.schema.json"}
    assert written == expected
    search = json.loads((tmp_path / "out" / "SearchSession.v1.schema.json").read_text())
    assert {"session_id", "search_query", "search_results"} <= set(search["required"])
    assert search["additionalProperties"] is False
    union = json.loads((tmp_path / "out" / "ClickstreamEvent.v1.schema.json").read_text())
    assert set(union["discriminator"]["mapping"]) == {"search", "interaction", "irrelevant", "session_end"}
    assert f"{len(expected)} schemas written" in capsys.readouterr().out


def test_exported_schema_matches_the_model(tmp_path) -> None:
    main(["schemas", "export", str(tmp_path)])

    assert json.loads((tmp_path / "Interaction.v1.schema.json").read_text()) == Interaction.model_json_schema()


def test_help_lists_every_subcommand_with_its_line(capsys, monkeypatch) -> None:
    import importlib

    monkeypatch.setenv("COLUMNS", "400")  # no wrapping, so each help line is found whole

    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in SUBCOMMANDS:
        line = importlib.import_module(f"embedding_studio.cli.{name}_cmd").HELP
        assert f"{name.replace('_', '-')} {' '.join(line.split())}" in out


def test_every_subcommand_has_its_own_help(capsys) -> None:
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exited:
            main([name.replace("_", "-"), "--help"])
        assert exited.value.code == 0
    assert "usage: embedding-studio emit" in capsys.readouterr().out

