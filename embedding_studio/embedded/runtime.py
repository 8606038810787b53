"""The embedded runtime: every part a configuration leaves unset, started on this machine.

Parts are context managers entered into one ExitStack, so they stop in reverse order of start
(workers before the broker they flush to) whether the block ends normally, by an exception or by
Ctrl-C. A part that fails to start stops the ones already started.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from embedding_studio.embedded.broker import TansuBroker
from messaging.topics import ensure_topics
from schemas.settings import Settings
from schemas.topics import TopicRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")


class EmbeddedRuntime:
    """``with EmbeddedRuntime(settings) as runtime: ... runtime.bootstrap ...``

    Starts a tansu broker unless ``settings.kafka_bootstrap`` names a cluster, then creates the
    registry's topics. Further parts join with ``runtime.enter(part)``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics: TopicRegistry = settings.topics()
        self.broker: TansuBroker | None = None
        self._bootstrap: str | None = None
        self._stack: ExitStack | None = None

    @property
    def bootstrap(self) -> str:
        if self._bootstrap is None:
            raise RuntimeError("the runtime is not started")
        return self._bootstrap

    @property
    def logs_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def start(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("the runtime is already started")
        with ExitStack() as stack:
            self._stack = stack
            try:
                self._start_broker()
                ensure_topics(self.bootstrap, self.topics, self.settings.replication_factor)
            except BaseException:
                self._stack = None
                self._bootstrap = None
                raise
            # Started: from now on the parts belong to the runtime, not to this block.
            self._stack = stack.pop_all()
        return self

    def _start_broker(self) -> None:
        if self.settings.kafka_bootstrap:
            self._bootstrap = self.settings.kafka_bootstrap
            return
        self.broker = self.enter(TansuBroker(log_path=self.logs_dir / "broker.log"))
        self._bootstrap = self.broker.bootstrap

    def enter(self, part: AbstractContextManager[T]) -> T:
        """Start ``part`` now and stop it before everything started earlier."""
        if self._stack is None:
            raise RuntimeError("the runtime is not started")
        return self._stack.enter_context(part)

    def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        self.broker = None
        self._bootstrap = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
