"""Counters of the stream worker, logged periodically as one ``name=value`` line.

Each counter set has a single writer (the sessionizer thread or the batcher agent), so plain
Counter increments are enough; the periodic logger only reads.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("stream_processors.counters")


class StreamCounters:
    def __init__(self) -> None:
        self.sessionizer: Counter[str] = Counter()
        self.batcher: Counter[str] = Counter()

    def snapshot(self) -> dict[str, int]:
        return {**self.sessionizer, **self.batcher}

    def line(self) -> str:
        return " ".join(f"{name}={value}" for name, value in sorted(self.snapshot().items()))

    def log(self) -> None:
        log.info("stream metrics: %s", self.line() or "nothing yet")
