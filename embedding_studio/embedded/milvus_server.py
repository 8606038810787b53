"""Milvus Lite as a server for one machine: the index database under ES_DATA_DIR, served on a free
loopback port, so that every process of `embedding-studio up` (indexer, search endpoint, the
`search` and `index` commands of another shell) shares it through a URI — Milvus Lite lets only one
process open the database folder itself. Clients use exactly the code they use for a Milvus server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from embedding_studio.embedded.ports import accepts_connections, free_port


class MilvusLiteServer:
    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None, startup_timeout_s: float = 60.0):
        self.data_dir = data_dir.resolve()
        self.log_path = log_path
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MilvusLiteServer:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as sink:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while not accepts_connections("127.0.0.1", self.port):
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"the Milvus Lite server exited at start-up; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the Milvus Lite server did not listen within {self.startup_timeout_s:.0f} s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGINT: its graceful path (drain requests, close the database and its lock).
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> MilvusLiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
