"""Shared pieces of every contract: the base model, timestamps, identifiers, error reporting."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime) -> datetime:
    # Clients often send naive ISO strings; the contract defines them as UTC rather than refusing them.
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A point in time: ISO-8601 string or unix seconds in JSON, always UTC once parsed."""

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
"""Ids chosen by clients (session, event, object, user, batch, task)."""

Metadata = Annotated[dict[str, Any], Field(default_factory=dict)]


class Part(BaseModel):
    """A nested piece of a contract (a shown result, a stored event, progress).

    Unknown fields are refused so that a typo in a producer is caught at the edge instead of being
    silently dropped; instances are immutable so that a parsed event cannot drift from its bytes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=65_536)


class Contract(Part):
    """Base of every event, command and stored record: a Part that carries its schema version."""

    SCHEMA_VERSION: ClassVar[int] = 1  # class-level: the version this code writes and the newest it reads

    schema_version: int = Field(default=1, ge=1, description="Version of this contract the sender wrote.")

    def model_post_init(self, __context: Any) -> None:
        if self.schema_version > type(self).SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is newer than {type(self).__name__} "
                f"v{type(self).SCHEMA_VERSION} understood here; upgrade this consumer"
            )


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the field path and the reason, e.g.
    ``search_results.0.object_id: String should have at least 1 character``."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(p) for p in item["loc"]) or "<event>"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


class ContractError(ValueError):
    """Raised when bytes or a mapping do not satisfy a contract; ``reason`` is human-readable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
