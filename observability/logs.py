"""Logs as text for people or JSON lines for machines (``ES_LOG_FORMAT``), carrying the ids of what
a line is about.

``log_context(task_id=..., batch_id=...)`` sets ids for everything logged inside it on that thread;
ids passed as ``extra={"session_id": ...}`` to one call win. A JSON line holds ``ts`` (UTC, ISO
8601), ``level``, ``logger``, ``process`` (the role: worker, trainer, sessionizer-1...),
``message``, the ids that are known, and ``exc`` with the traceback when there is one.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from schemas.settings import Settings

CONTEXT_IDS = ("session_id", "batch_id", "task_id")
# Attributes a record may carry as ``extra`` that a JSON line keeps as they are.
EXTRA_FIELDS = (*CONTEXT_IDS, "metrics_url", "model", "index_version")

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("es_log_context", default={})
_process_name = "es"


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Ids (``task_id``, ``batch_id``, ``session_id``) every line logged inside carries."""
    token = _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": _process_name,
            "message": record.getMessage(),
        }
        line.update(_context.get())
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s {process} %(name)s: %(message)s"


def formatter(settings: Settings, process: str) -> logging.Formatter:
    global _process_name
    _process_name = process
    if settings.log_format == "json":
        return JsonLinesFormatter()
    return logging.Formatter(TEXT_FORMAT.format(process=process))


def configure_logging(settings: Settings, process: str = "es", stream=None, *, force: bool = False) -> None:
    """The root logger of this process: ``ES_LOG_LEVEL``, ``ES_LOG_FORMAT``, to stderr. Like
    ``logging.basicConfig``, it leaves a root logger that has handlers already (a host application's,
    pytest's) alone unless ``force``."""
    root = logging.getLogger()
    if root.handlers and not force:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(settings, process))
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def faust_logging_config(settings: Settings | None = None, process: str = "worker") -> dict:
    """``logging_config`` for a Faust (mode) Worker, which replaces the root handlers at start."""
    settings = settings or Settings()
    formatter(settings, process)
    spec: dict[str, Any] = ({"()": f"{__name__}.JsonLinesFormatter"} if settings.log_format == "json"
                            else {"format": TEXT_FORMAT.format(process=process)})
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"es": spec},
        "handlers": {"es": {"class": "logging.StreamHandler", "formatter": "es", "stream": "ext://sys.stderr"}},
        "root": {"level": settings.log_level.upper(), "handlers": ["es"]},
    }
