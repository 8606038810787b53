"""The metrics endpoint of a process, and where each running one can be found.

A process serves ``/metrics`` on ``ES_METRICS_HOST:ES_METRICS_PORT``; port 0 takes a free one, so
several processes on one machine (``embedding-studio up``) never fight over a port. Every endpoint
announces itself in a small JSON file under ``ES_DATA_DIR/metrics/`` (role, pid, URL), removed when
the process ends; ``up`` prints them and ``embedding-studio status`` reads them.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from prometheus_client import REGISTRY, start_http_server

from observability.metrics import initialise
from schemas.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    role: str
    pid: int
    url: str


class MetricsPortInUse(RuntimeError):
    """ES_METRICS_PORT names a port another process holds."""


def announcements_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "metrics"


class MetricsServer:
    """A running endpoint; ``close()`` (or leaving ``with``) stops it and withdraws its announcement.
    A process that just exits loses the server with it, and the announcement goes at exit."""

    def __init__(self, endpoint: Endpoint | None, httpd=None, announcement: Path | None = None):
        self.endpoint = endpoint
        self._httpd = httpd
        self._announcement = announcement

    @property
    def url(self) -> str | None:
        return self.endpoint.url if self.endpoint else None

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._announcement is not None:
            self._announcement.unlink(missing_ok=True)

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_metrics_server(settings: Settings, role: str) -> MetricsServer:
    """Serve this process's metrics (nothing when ``ES_METRICS_ENABLED`` is off); the endpoint is
    logged and announced under the data dir."""
    if not settings.metrics_enabled:
        return MetricsServer(None)
    initialise(role)
    try:
        httpd, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY)
    except OSError as error:
        raise MetricsPortInUse(f"{role}: cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
                               f"({error}); set ES_METRICS_PORT to a free port, or 0 for any") from None
    host = settings.metrics_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()  # what another container or machine can reach
    endpoint = Endpoint(role=role, pid=os.getpid(), url=f"http://{host}:{httpd.server_port}/metrics")
    announcement = _announce(settings.data_dir, endpoint)
    log.info("%s metrics on %s", role, endpoint.url, extra={"metrics_url": endpoint.url})
    return MetricsServer(endpoint, httpd, announcement)


def _announce(data_dir: Path, endpoint: Endpoint) -> Path:
    folder = announcements_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{endpoint.role}-{endpoint.pid}.json"
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(endpoint)))
    partial.replace(path)  # readers see a whole file or none
    atexit.register(path.unlink, missing_ok=True)
    return path


def announced_endpoints(data_dir: Path | str) -> list[Endpoint]:
    """The endpoints of processes still running that announced themselves under ``data_dir``."""
    found: list[Endpoint] = []
    for path in sorted(announcements_dir(data_dir).glob("*.json")):
        try:
            endpoint = Endpoint(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if _alive(endpoint.pid):
            found.append(endpoint)
        else:
            path.unlink(missing_ok=True)  # a killed process never removed its file
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_endpoints(data_dir: Path | str, count: int, timeout_s: float = 60.0,
                       alive: Callable[[], bool] = lambda: True) -> list[Endpoint]:
    """The announced endpoints once ``count`` are there (or what is there after ``timeout_s``, or
    as soon as ``alive()`` says a part died)."""
    import time

    deadline = time.monotonic() + timeout_s
    found = announced_endpoints(data_dir)
    while len(found) < count and time.monotonic() < deadline and alive():
        time.sleep(0.2)
        found = announced_endpoints(data_dir)
    return found
