"""A task without a batch waits for the BatchClosed of its own release, handed over by the consume loop."""

from __future__ import annotations

import threading

import pytest

from schemas.base import utc_now
from schemas.batches import BatchClosed
from trainer.task_control import TaskCanceled
from trainer.task_worker import ReleaseWaiter


def closed(batch_id: str, release_id: str | None) -> BatchClosed:
    return BatchClosed(batch_id=batch_id, session_count=1, opened_at=utc_now(), closed_at=utc_now(),
                       close_reason="release", release_id=release_id)


def test_the_batch_closed_of_the_release_ends_the_wait_with_its_batch():
    waiter = ReleaseWaiter()
    waiter.expect("r-1")
    threading.Timer(0.1, waiter.arrived, [closed("b-other", "r-2")]).start()
    threading.Timer(0.2, waiter.arrived, [closed("b-1", "r-1")]).start()
    assert waiter.wait("r-1", timeout_s=30, should_stop=lambda: False) == "b-1"


def test_a_batch_closed_that_arrives_before_the_wait_is_not_lost():
    waiter = ReleaseWaiter()
    waiter.expect("r-1")
    waiter.arrived(closed("b-1", "r-1"))
    assert waiter.wait("r-1", timeout_s=0.1, should_stop=lambda: False) == "b-1"


def test_no_batch_closed_means_none_after_the_timeout_and_a_cancel_stops_the_wait():
    waiter = ReleaseWaiter()
    waiter.arrived(closed("b-1", "r-1"))  # nobody expected it: not kept
    assert waiter.wait("r-1", timeout_s=0.2, should_stop=lambda: False) is None
    with pytest.raises(TaskCanceled):
        waiter.wait("r-1", timeout_s=30, should_stop=lambda: True)
