"""Points in time as integer microseconds since the Unix epoch, for indexed store columns.

Integers rather than text or native timestamp types: they compare correctly in SQL, they keep
the microseconds that Cassandra's ``timestamp`` (milliseconds) would drop, and they convert
exactly, without the float rounding of ``datetime.timestamp()``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:  # the contracts' rule: naive means UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)
