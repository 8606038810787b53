"""The open batch: closed sessions go in, closed batches come out.

There is one open batch for the installation, kept in the store; exactly one batcher changes it —
the one that owns the single partition of the sessions topic — and it takes sessions, releases and
age checks from that topic in order, so nothing races it. This class is the batcher's logic over
the store, free of Kafka; the Faust agent in ``app`` feeds it and announces what it closes.

Rules:

- a batch is opened when the first session needs one (an installation with no traffic has no
  empty batch lying open); its id is ``b-<opened, UTC>-<random>``: random, because the open batch
  is found in the store after a restart rather than recomputed, and sortable for people;
- a session is stored at most once, in the first batch it reached (the store's rule), so sessions
  sent twice by the at-least-once path above are not counted twice;
- a batch closes when it holds ``max_sessions`` sessions (a record of sessions may fill one batch
  and start the next), when its first session is ``max_age`` old, or on a release;
- a release names its ``release_id``: a release already used closes nothing more. A release while
  the open batch holds no session closes nothing (logged): an empty batch cannot train anything,
  and a caller waiting for its release to show up keeps waiting rather than receiving nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from schemas.base import utc_now
from schemas.sessions import BatchCloseReason, BatchRecord, BatchStatus, ClosedSession
from stream_processors.batcher_records import EncodedSession
from session_store.base import BatchNotFound, BatchNotOpen, ReleaseConflict, SessionStore

log = logging.getLogger(__name__)


def new_batch_id(opened_at: datetime) -> str:
    return f"b-{opened_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


class Batcher:
    def __init__(
        self,
        store: SessionStore,
        *,
        max_sessions: int,
        max_age: timedelta,
        counters: Counter[str] | None = None,
    ) -> None:
        self.store = store
        self.max_sessions = max_sessions
        self.max_age = max_age
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.open: BatchRecord | None = None
        self.count = 0
        self.epoch: int | None = None

    def resume(self, now: datetime | None = None) -> list[BatchRecord]:
        """Take over (at start, or after the partition came back): claim a new epoch, so that a
        batcher still writing from before the rebalance is refused (StaleBatcher), pick up the
        open batch, and close any other open batch with sessions in it (a second batch that two
        overlapping batchers opened would otherwise stay open for ever). Returns what it closed."""
        self.epoch = self.store.claim_batcher()
        self._reload()
        closed: list[BatchRecord] = []
        for stale in self.store.list_batches(BatchStatus.open, limit=100):
            if self.open is not None and stale.batch_id == self.open.batch_id:
                continue
            if self.store.count_sessions(stale.batch_id):
                log.warning("closing batch %s, left open by an earlier batcher", stale.batch_id)
                closed.append(self.store.close_batch(stale.batch_id, now or utc_now(), "age", epoch=self.epoch))
        return closed

    def _reload(self) -> None:
        self.open = self.store.get_open_batch()
        self.count = self.store.count_sessions(self.open.batch_id) if self.open else 0
        if self.open:
            log.info("batcher resumes open batch %s with %d session(s)", self.open.batch_id, self.count)

    # --- inputs ------------------------------------------------------------------------------------
    def add(self, sessions: Sequence[ClosedSession | EncodedSession], now: datetime) -> list[BatchRecord]:
        """Store the sessions; return the batches this closed, in order."""
        closed: list[BatchRecord] = []
        pending = list(sessions)
        while pending:
            if self.open is None:
                self._open(now)
            assert self.open is not None
            room = self.max_sessions - self.count
            chunk, pending = pending[:room], pending[room:]
            try:
                added = self.store.put_sessions(self.open.batch_id, chunk, epoch=self.epoch)
            except (BatchNotOpen, BatchNotFound):
                # Closed behind our back (an operator, a takeover): go on in a batch that is
                # open, and put this chunk there.
                log.warning("batch %s is no longer open; continuing in a new one", self.open.batch_id)
                self._reload()
                pending = chunk + pending
                continue
            self.count += added
            self.counters["sessions_stored"] += added
            self.counters["sessions_already_stored"] += len(chunk) - added
            if self.count >= self.max_sessions:
                closed.append(self._close(now, "size"))
        closed += self.check_age(now)
        return closed

    def release(self, release_id: str, now: datetime) -> list[BatchRecord]:
        earlier = self.store.find_batch_by_release(release_id)
        if earlier is not None:
            self.counters["releases_repeated"] += 1
            log.info("release %s already closed batch %s; nothing more to do", release_id, earlier.batch_id)
            return []
        if self.open is None or self.count == 0:
            self.counters["releases_empty"] += 1
            log.info("release %s: the open batch holds no session; nothing closed", release_id)
            return []
        try:
            return [self._close(now, "release", release_id)]
        except ReleaseConflict:  # only if another writer used the id meanwhile
            self.counters["releases_repeated"] += 1
            return []

    def check_age(self, now: datetime) -> list[BatchRecord]:
        if self.open is not None and self.count > 0 and now - self.open.opened_at >= self.max_age:
            return [self._close(now, "age")]
        return []

    # --- batch life cycle -------------------------------------------------------------------------------
    def _open(self, now: datetime) -> None:
        self.open = self.store.open_batch(new_batch_id(now), now)
        self.count = 0
        log.info("opened batch %s", self.open.batch_id)

    def _close(self, now: datetime, reason: BatchCloseReason, release_id: str | None = None) -> BatchRecord:
        assert self.open is not None
        record = self.store.close_batch(self.open.batch_id, now, reason, release_id, epoch=self.epoch)
        self.open, self.count = None, 0
        self.counters[f"batches_closed_{reason}"] += 1
        log.info("closed batch %s (%s) with %d session(s)", record.batch_id, reason, record.session_count)
        return record
