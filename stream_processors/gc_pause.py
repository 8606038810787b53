"""Pausing Python's cyclic garbage collector while a batch is handled.

A batch of a few thousand events builds tens of thousands of short-lived objects that all stay
alive until the batch is done; the collector then sees each of them survive into older generations
and walks the whole heap again and again (measured: a third of the sessionizer's time). None of them
form reference cycles — reference counting frees them when the batch's lists go — so the collector
is paused for the batch and resumed right after, when it finds almost nothing left to walk.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    # The switch is process-wide and two threads (sessionizer, batcher) use it: count holders, so
    # that the first one done does not switch collection back on under the other.
    global _holders
    with _lock:
        _holders += 1
        gc.disable()
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.enable()
