"""The whole system on one machine: broker, MLflow, index, stream workers, trainer, indexer, search.

Each part a setting leaves unset is started here: tansu without ``ES_KAFKA_BOOTSTRAP``, an MLflow
server (SQLite backend, local artifacts) without ``ES_MLFLOW_TRACKING_URI``, a SQLite session store
without ``ES_STORE_URL``, a Milvus Lite server over ``ES_DATA_DIR/index`` without ``ES_MILVUS_URI``.
Stream workers, the indexer and the search endpoint run as processes of their own (Faust wants its
own main thread and event loop; embedding the catalog should not slow the trainer's thread down),
configured only through ES_* variables exactly as in production; the trainer runs on a thread of
this process, so its progress bars show in this terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from embedding_studio.embedded.mlflow_server import MlflowServer
from embedding_studio.embedded.ports import free_port
from embedding_studio.embedded.runtime import EmbeddedRuntime
from observability.exposition import start_metrics_server
from schemas.settings import Settings

log = logging.getLogger(__name__)


def settings_env(settings: Settings) -> dict[str, str]:
    """The ES_* variables that reproduce ``settings`` in another process."""
    env = {"PYTHONUNBUFFERED": "1"}  # their logs reach the files as they happen
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[f"ES_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """``embedding-studio worker`` (or another subcommand: ``command``) in a process of its own; its
    output goes to a log file."""

    def __init__(self, settings: Settings, log_path: Path, name: str = "worker",
                 command: tuple[str, ...] = ("worker", "--no-topics")):
        self.settings = settings
        self.log_path = log_path
        self.name = name
        self.command = command
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        script = Path(sys.executable).with_name("embedding-studio")
        command = [str(script)] if script.exists() else [
            sys.executable, "-c", "import sys; from embedding_studio.cli import main; sys.exit(main())"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                [*command, *self.command], env={**os.environ, **settings_env(self.settings)},
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __exit__(self, *exc: object) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for 30 s; killed (see %s)", self.name, self.log_path)
            self.process.kill()
            self.process.wait()


class TrainerThread:
    """The trainer service on a thread; stopping it lets a running trial end at its next step."""

    def __init__(self, settings: Settings, training_overrides: dict | None = None):
        from trainer.app import build_trainer

        self.trainer = build_trainer(settings, training_overrides=training_overrides)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trainer", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.trainer.run(self.stop)
        except BaseException as error:  # noqa: BLE001 - reported by alive()/the caller
            self.error = error
            log.exception("the trainer stopped")

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def alive(self) -> bool:
        return self.thread.is_alive()

    def __exit__(self, *exc: object) -> None:
        # The trainer closes its Kafka producer as it stops (Trainer.close), before the broker goes.
        self.stop.set()
        self.thread.join(timeout=120)


class EmbeddedSystem:
    """``with EmbeddedSystem(settings) as system: ... system.settings ...``

    ``system.settings`` is complete: it names the broker, MLflow server and store that were started,
    so anything built from it (a producer, a tasks client) talks to this system.
    """

    def __init__(self, settings: Settings, *, workers: int = 1, trainer: bool = True,
                 training_overrides: dict | None = None, indexer: bool = True, search: bool = True):
        self.requested = settings
        self.workers = workers
        self.with_trainer = trainer
        self.with_indexer = indexer
        self.with_search = search
        self.milvus = None
        self.indexer: WorkerProcess | None = None
        self.search: WorkerProcess | None = None
        self.training_overrides = training_overrides
        self.runtime = EmbeddedRuntime(settings)
        self.settings: Settings = settings
        self.mlflow: MlflowServer | None = None
        self.worker_processes: list[WorkerProcess] = []
        self.trainer: TrainerThread | None = None

    def start(self) -> Self:
        from session_store import open_store
        from trainer.plugin_loader import check_plugin_folders

        if self.with_trainer:  # before anything starts: a wrong ES_PLUGINS_PATH is a start-up error
            check_plugin_folders(self.requested.plugins_path)
        runtime = self.runtime.start()
        try:
            data_dir = Path(self.requested.data_dir).resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            tracking_uri = self.requested.mlflow_tracking_uri
            if not tracking_uri:
                self.mlflow = runtime.enter(MlflowServer(data_dir / "mlflow"))
                tracking_uri = self.mlflow.uri
            milvus_uri = self.requested.milvus_uri
            if not milvus_uri and (self.with_indexer or self.with_search):
                # Milvus Lite opens its folder in one process only: served to every process of ours.
                from embedding_studio.embedded.milvus_server import MilvusLiteServer

                self.milvus = runtime.enter(MilvusLiteServer(data_dir / "index" / "milvus.db",
                                                             runtime.logs_dir / "milvus.log"))
                milvus_uri = self.milvus.uri
            self.settings = self.requested.model_copy(update={
                "kafka_bootstrap": runtime.bootstrap, "mlflow_tracking_uri": tracking_uri, "data_dir": data_dir,
                "store_url": self.requested.resolved_store_url(), "milvus_uri": milvus_uri,
                "search_port": self.requested.search_port or free_port(),
                "metrics_port": 0,  # several processes here: each takes a free port and announces it
            })
            with open_store(self.settings.resolved_store_url()) as store:
                store.init_schema()
            for number in range(self.workers):
                worker = WorkerProcess(self.settings, runtime.logs_dir / f"worker-{number}.log", f"worker {number}")
                self.worker_processes.append(runtime.enter(worker))
            if self.with_indexer:
                self.indexer = runtime.enter(WorkerProcess(self.settings, runtime.logs_dir / "indexer.log", "indexer",
                                                           ("indexer", "--no-topics")))
            if self.with_search:
                self.search = runtime.enter(WorkerProcess(self.settings, runtime.logs_dir / "search.log",
                                                          "search endpoint", ("serve",)))
            if self.with_trainer:
                self.trainer = runtime.enter(TrainerThread(self.settings, self.training_overrides))
                runtime.enter(start_metrics_server(self.settings, "trainer"))  # the trainer thread's metrics
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def bootstrap(self) -> str:
        return self.runtime.bootstrap

    @property
    def search_url(self) -> str | None:
        return f"http://{self.settings.search_host}:{self.settings.search_port}" if self.search else None

    @property
    def logs_dir(self) -> Path:
        return self.runtime.logs_dir

    def problems(self) -> list[str]:
        """Parts that died: a supervisor loop reports these instead of waiting forever."""
        parts = [*self.worker_processes, *(p for p in (self.indexer, self.search) if p is not None)]
        found = [f"{w.name} exited (see {w.log_path})" for w in parts if not w.alive()]
        if self.trainer is not None and not self.trainer.alive():
            found.append(f"the trainer stopped: {self.trainer.error!r}")
        return found

    def stop(self) -> None:
        self.runtime.stop()
        self.worker_processes.clear()
        self.indexer = self.search = self.milvus = None
        self.trainer = None
        self.mlflow = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
