"""Milvus Lite as a server for one machine: the index database under ES_DATA_DIR, served on a free
loopback port, so that every process of `embedding-studio up` (indexer, search endpoint, the
`search` and `index` commands of another shell) shares it through a URI — Milvus Lite lets only one
process open the database folder itself. Clients use exactly the code they use for a Milvus server."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from embedding_studio.embedded.local_server import LocalServer
from embedding_studio.embedded.ports import accepts_connections


class MilvusLiteServer(LocalServer):
    name = "Milvus Lite server"
    stop_signal = signal.SIGINT  # its graceful path: drain requests, close the database and its lock
    stop_grace_s = 15.0

    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None, startup_timeout_s: float = 60.0):
        super().__init__(log_path, port, startup_timeout_s)
        self.data_dir = data_dir.resolve()

    def prepare(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir),
                "--host", "127.0.0.1", "--port", str(self.port)]

    def is_ready(self) -> bool:
        return accepts_connections("127.0.0.1", self.port)
