"""Named crash points: a test-only hook that SIGKILLs a process at an exact step.

Fault tests set ``ES_FAULT_CRASH_AT=point[:n]`` for one process; the n-th time (default 1) that
process reaches ``crash_point("point")`` it kills itself with SIGKILL — no flush, no commit, no
goodbye — so a test can stop a worker between two named steps deterministically instead of
hoping a timed kill lands there. Unset (always, outside tests) it costs one dict lookup.

The points, in the order data flows:

- ``sessionizer.after_produce``: closed sessions, late events and dead letters are acknowledged by
  the broker, the new states are not saved yet;
- ``sessionizer.after_save``: the states are saved, the batch's offsets are not committed;
- ``sessionizer.idle_close``: idle sessions are sent, their tombstones not saved;
- ``batcher.batch_close``: the store closed a batch, nothing announced it yet;
- ``batcher.announce``: the broker acknowledged a BatchClosed, the store has not marked it;
- ``trainer.before_model_ready``: the model is uploaded, its ModelReady is not sent.

Read from the environment rather than passed around, because the points sit in child processes
(sessionizers), in the Faust worker and in the trainer alike; ``Settings.fault_crash_at`` documents it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV_VAR = "ES_FAULT_CRASH_AT"
POINTS = (
    "sessionizer.after_produce", "sessionizer.after_save", "sessionizer.idle_close",
    "batcher.batch_close", "batcher.announce", "trainer.before_model_ready",
)
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(nth or 1):
        # Written straight to the descriptor: the test reads it in the process's log.
        os.write(2, f"crash point {name} reached: SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
