"""What travels on the internal sessions topic, from the sessionizer (and the command and timer
paths) to the batcher.

Everything that changes the open batch goes through this one single-partition topic, so the one
batcher that owns the partition applies sessions, releases and age checks in order, and no timer or
second agent can race it.

Closed sessions travel many to a record, already in the JSON the store keeps: at tens of thousands
of sessions a second, one Kafka record per session, or parsing and re-serialising each session in
the batcher, would cost more than storing them. A sessions record is JSON lines: first
``{"kind":"sessions","index":[[session_id, created_at, closed_at], ...]}``, then one line per
session with its ``ClosedSession`` JSON (compact JSON never holds a raw newline). The other kinds
are one JSON object each.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter

from schemas.base import Identifier, Part, UtcDatetime
from schemas.sessions import ClosedSession

# The batcher owns one partition; every record carries this key.
BATCHER_KEY = b"batcher"
# Well under Kafka's default 1 MB record limit; a single bigger session still travels alone.
MAX_RECORD_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class EncodedSession:
    """A closed session as its JSON, with the few fields a store indexes. Stores take it where
    they take a ClosedSession: they read those fields and ``model_dump_json()`` — the JSON as the
    sessionizer serialised it from a validated session."""

    session_id: str
    created_at: datetime
    closed_at: datetime
    body: str

    def model_dump_json(self, **_: object) -> str:
        return self.body

    def decode(self) -> ClosedSession:
        return ClosedSession.model_validate_json(self.body)


@dataclass(frozen=True, slots=True)
class SessionsClosed:
    sessions: list[EncodedSession]


class ReleaseRequested(Part):
    """A ReleaseBatch command, forwarded from the commands topic."""

    kind: Literal["release"] = "release"
    release_id: Identifier
    command_id: Identifier | None = None
    requested_at: UtcDatetime


class AgeCheck(Part):
    """"Is the open batch too old?" — sent by a timer, answered by the batcher in its turn."""

    kind: Literal["age_check"] = "age_check"
    sent_at: UtcDatetime


_command = TypeAdapter(Annotated[Union[ReleaseRequested, AgeCheck], Field(discriminator="kind")])


def parse_batcher_input(value: bytes) -> SessionsClosed | ReleaseRequested | AgeCheck:
    """Raises ValueError for a record this module did not write."""
    head, newline, rest = value.partition(b"\n")
    if not newline:
        return _command.validate_json(value)
    index = json.loads(head)["index"]
    bodies = rest.split(b"\n")
    if len(index) != len(bodies):
        raise ValueError(f"a sessions record with {len(index)} index entries and {len(bodies)} bodies")
    parse = datetime.fromisoformat
    return SessionsClosed([
        EncodedSession(session_id, parse(created), parse(closed), body.decode())
        for (session_id, created, closed), body in zip(index, bodies)
    ])


def encode(record: ReleaseRequested | AgeCheck) -> bytes:
    return record.model_dump_json().encode()


def encode_sessions(
    sessions: Sequence[ClosedSession],
    max_bytes: int = MAX_RECORD_BYTES,
    *,
    too_big: Callable[[ClosedSession, int], None] | None = None,
    max_session_bytes: int | None = None,
) -> Iterator[bytes]:
    """Sessions records holding ``sessions``, each about ``max_bytes`` at most unless a single
    session is bigger. A session of more than ``max_session_bytes`` goes to ``too_big`` instead."""
    index: list[tuple[str, str, str]] = []
    bodies: list[bytes] = []
    size = 0
    to_json = ClosedSession.__pydantic_serializer__.to_json  # bytes, without model_dump_json's wrapper
    for session in sessions:
        body = to_json(session)
        if max_session_bytes is not None and len(body) > max_session_bytes:
            if too_big is not None:
                too_big(session, len(body))
            continue
        if bodies and size + len(body) > max_bytes:
            yield _sessions_record(index, bodies)
            index, bodies, size = [], [], 0
        index.append((session.session_id, session.created_at.isoformat(), session.closed_at.isoformat()))
        bodies.append(body)
        size += len(body) + 100
    if bodies:
        yield _sessions_record(index, bodies)


def _sessions_record(index: list[tuple[str, str, str]], bodies: list[bytes]) -> bytes:
    head = json.dumps({"kind": "sessions", "index": index}, separators=(",", ":")).encode()
    return head + b"\n" + b"\n".join(bodies)
