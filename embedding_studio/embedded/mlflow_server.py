"""An MLflow tracking server for one machine: SQLite backend, local artifact store, proxied
artifacts (so clients need no direct access to the artifact folder), on a free loopback port."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from embedding_studio.embedded.local_server import LocalServer


class MlflowServer(LocalServer):
    name = "mlflow server"

    def __init__(self, directory: Path, port: int | None = None, startup_timeout_s: float = 90.0):
        self.directory = directory.resolve()
        super().__init__(self.directory / "mlflow-server.log", port, startup_timeout_s)

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
            "--artifacts-destination", str(self.directory / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False
