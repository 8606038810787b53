"""Clickstream: what a search product sends. One raw topic carries all four kinds, told apart by
``type``; all events of one search session share its ``session_id`` (the Kafka key).

Follows the reference EmbeddingStudio's API: a search session with the results shown, then interactions (clicks by
default) on those results, an optional "nothing here was relevant" mark and an optional explicit end.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from schemas.base import (
    Contract,
    Part,
    ContractError,
    Identifier,
    Metadata,
    UtcDatetime,
    describe_validation_error,
    utc_now,
)

MAX_RESULTS_PER_SEARCH = 1000


class SearchResult(Part):
    """One result as the engine showed it."""

    object_id: Identifier
    rank: float = Field(
        description="The engine's rank for this result, kept exactly as given: lower means shown "
        "higher up (a position, 0- or 1-based, or any increasing score of placement)."
    )
    meta: Metadata


class SearchSession(Contract):
    """A search: the query and the results shown for it. Opens the session ``session_id``."""

    type: Literal["search"] = "search"
    session_id: Identifier
    search_query: Annotated[str, Field(min_length=1, max_length=4096)]
    search_meta: Metadata
    search_results: Annotated[list[SearchResult], Field(max_length=MAX_RESULTS_PER_SEARCH)]
    user_id: Identifier | None = None
    created_at: UtcDatetime = Field(default_factory=utc_now)

    @field_validator("search_results")
    @classmethod
    def _object_ids_unique(cls, results: list[SearchResult]) -> list[SearchResult]:
        seen: set[str] = set()
        for result in results:
            if result.object_id in seen:
                raise ValueError(f"object_id {result.object_id!r} appears twice in one search")
            seen.add(result.object_id)
        return results


class Interaction(Contract):
    """A user acted on a shown result; ``event_id`` makes re-sends harmless."""

    type: Literal["interaction"] = "interaction"
    session_id: Identifier
    event_id: Identifier
    object_id: Identifier
    event_type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = "click"
    created_at: UtcDatetime = Field(default_factory=utc_now)
    meta: Metadata


class MarkIrrelevant(Contract):
    """The user said no shown result was relevant to the query."""

    type: Literal["irrelevant"] = "irrelevant"
    session_id: Identifier
    created_at: UtcDatetime = Field(default_factory=utc_now)


class SessionEnd(Contract):
    """The client knows the session is over (page left, new query); closes it without waiting."""

    type: Literal["session_end"] = "session_end"
    session_id: Identifier
    created_at: UtcDatetime = Field(default_factory=utc_now)


ClickstreamEvent = Annotated[
    Union[SearchSession, Interaction, MarkIrrelevant, SessionEnd], Field(discriminator="type")
]
"""Any clickstream event: the one union of the four types (discriminated by ``type`` when parsed),
for type hints and ``TypeAdapter`` alike."""
CLICKSTREAM_EVENT_TYPES = (SearchSession, Interaction, MarkIrrelevant, SessionEnd)

_adapter: TypeAdapter[ClickstreamEvent] = TypeAdapter(ClickstreamEvent)


def parse_clickstream_event(raw: bytes | str | dict) -> ClickstreamEvent:
    """Parse one raw event, or raise ContractError whose reason names each bad field."""
    try:
        if isinstance(raw, dict):
            return _adapter.validate_python(raw)
        return _adapter.validate_json(raw)
    except ValidationError as error:
        raise ContractError(describe_validation_error(error)) from error


# What ``SearchSession.search_meta`` says about who answered: the model whose ranking the user saw
# (a URI or any version label; the search endpoint sends the MLflow model URI) and the index
# version. Live search quality is reported per value of ``SEARCH_META_MODEL``.
SEARCH_META_MODEL = "model_uri"
SEARCH_META_INDEX_VERSION = "index_version"
UNKNOWN_MODEL = "unknown"


def served_by(search_meta: dict) -> str:
    """The model that served a search, from its ``search_meta`` (``unknown`` when not said)."""
    value = search_meta.get(SEARCH_META_MODEL)
    return str(value) if value not in (None, "") else UNKNOWN_MODEL
