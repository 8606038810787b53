"""The rules of a time-bucketed session index, apart from any database.

An index entry says "session S was saved on partition P while bucket B was current". Entries are
only ever added: a session that gets new events is entered again in the current bucket, and its
older entries go stale instead of being moved (a move would be a delete, and deletes are
tombstones that every later read of the old bucket wades through). The session's state is the
truth; an entry only says where to look:

- the bucket that *owns* a session is the one holding its state's ``last_seen``; an entry in any
  other bucket is stale and ignored. Writing the entry before the state keeps every open state's
  bucket entered, even when a save is cut short between the two.
- a bucket is *settled* when it owns no open session: then nothing in it can become idle, and
  the bucket list may forget it. A bucket whose idle sessions were just handed out is not settled
  yet: the next scan finds them closed, or hands them out again if their close was lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# A bucket is forgotten only once it ended this long ago by the store's clock as well as before
# the scan's cutoff: a save stamped within a bucket but written later than this (a slow retry,
# a worker whose clock is behind) would otherwise land in a bucket no longer listed. Clocks of the
# workers must agree within it (NTP does far better).
FORGET_MARGIN_US = 10 * 60 * 1_000_000


@dataclass(frozen=True)
class TimeBuckets:
    width_us: int

    def __post_init__(self) -> None:
        if self.width_us < 1_000_000:
            raise ValueError(f"a time bucket must be at least a second wide, not {self.width_us} us")

    def start(self, micros: int) -> int:
        """The start of the bucket holding ``micros`` (buckets are aligned on the Unix epoch)."""
        return micros - micros % self.width_us


@dataclass(frozen=True)
class Entry:
    session_id: str
    last_seen_us: int
    width_us: int


@dataclass(frozen=True)
class StateTimes:
    """What a scan needs of a stored state: not its events."""

    partition: int
    last_seen_us: int
    closed_us: int | None


@dataclass
class BucketVerdict:
    idle: list[str]
    settled: bool


def judge_bucket(partition: int, bucket_us: int, entries: Iterable[Entry], states: dict[str, StateTimes],
                 before_us: int) -> BucketVerdict:
    """Which of the bucket's sessions are idle (open, owned here, last seen before ``before_us``),
    and whether the bucket owns no open session at all. ``states`` holds the states of those
    entries seen before the cutoff; an entry seen at or after it keeps the bucket unsettled unread."""
    verdict = BucketVerdict(idle=[], settled=True)
    for entry in entries:
        if entry.last_seen_us >= before_us:
            verdict.settled = False  # not idle yet, whatever its state says
            continue
        state = states.get(entry.session_id)
        if state is None or state.closed_us is not None or state.partition != partition:
            continue  # gone, closed, or never this partition's: nothing to close
        if not bucket_us <= state.last_seen_us < bucket_us + entry.width_us:
            continue  # seen again since: a later bucket owns it
        verdict.settled = False
        if state.last_seen_us < before_us:
            verdict.idle.append(entry.session_id)
    return verdict


def forgettable_runs(buckets: list[tuple[int, bool, int]], limit_us: int) -> list[tuple[int, int]]:
    """Runs ``(first, last)`` of consecutive listed buckets that may be forgotten together (one
    range delete each): settled, and ended at or before ``limit_us``. ``buckets`` is the bucket
    list as read, in order, as ``(start_us, settled, end_us)``."""
    runs: list[tuple[int, int]] = []
    first: int | None = None
    last = 0
    for start, settled, end in buckets:
        if settled and end <= limit_us:
            first = start if first is None else first
            last = start
            continue
        if first is not None:
            runs.append((first, last))
            first = None
    if first is not None:
        runs.append((first, last))
    return runs
