"""The life cycle every embedded server process shares (MLflow, Milvus Lite): start it in a process
group of its own with its output in a log file, wait until it answers, stop the whole group —
gracefully first, then by force.

A subclass says what to run (``command``), when it is ready (``is_ready``), which signal asks it
to stop gracefully (``stop_signal``) and how long it may take (``startup_timeout_s``). (The tansu
broker has a start-up of its own: it retries on another port and recognises itself by cluster id.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Self

from embedding_studio.embedded.ports import free_port


class LocalServer:
    name = "server"
    stop_signal = signal.SIGTERM
    stop_grace_s = 10.0

    def __init__(self, log_path: Path, port: int | None = None, startup_timeout_s: float = 60.0) -> None:
        self.log_path = log_path
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what a subclass says ---------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Create the folders the server needs."""

    def is_ready(self) -> bool:
        raise NotImplementedError

    # --- the life cycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as sink:
            # Its own process group: servers spawn trees (uvicorn, gunicorn) that must stop together.
            self._process = subprocess.Popen(self.command(), stdout=sink, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True, env=self.environment())
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.is_ready():
            if self._process.poll() is not None:
                code, self._process = self._process.returncode, None
                raise RuntimeError(f"the {self.name} exited with code {code} at start-up; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the {self.name} was not ready within {self.startup_timeout_s:.0f} s on {self.uri}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, self.stop_signal)
            process.wait(self.stop_grace_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
