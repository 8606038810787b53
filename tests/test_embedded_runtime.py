"""The embedded runtime and its broker: started on a free port, topics as the registry says,
and nothing left behind once stopped, however the block ends."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from embedding_studio.embedded.broker import BrokerStartError, TansuBroker
from embedding_studio.embedded.runtime import EmbeddedRuntime
from messaging.topics import TopicMismatchError, ensure_topics
from schemas.settings import Settings
from schemas.topics import TopicRegistry


def _partitions(bootstrap: str) -> dict[str, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _refuses_connections(bootstrap: str) -> bool:
    host, port = bootstrap.split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_runtime_starts_a_broker_with_every_topic_and_stops_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=None, topic_prefix="rt", clickstream_partitions=6)

    with EmbeddedRuntime(settings) as runtime:
        bootstrap, pid = runtime.bootstrap, runtime.broker.pid
        assert bootstrap.startswith("127.0.0.1:")
        assert _partitions(bootstrap) == {spec.name: spec.partitions for spec in runtime.topics.all()}
        assert _partitions(bootstrap)["rt.clickstream.events"] == 6
        assert (tmp_path / "logs" / "broker.log").exists()

    assert _gone(pid)
    assert _refuses_connections(bootstrap)
    with pytest.raises(RuntimeError, match="not started"):
        runtime.bootstrap


def test_two_runtimes_side_by_side_get_their_own_ports(tmp_path: Path) -> None:
    with EmbeddedRuntime(Settings(data_dir=tmp_path / "a", kafka_bootstrap=None)) as first, \
            EmbeddedRuntime(Settings(data_dir=tmp_path / "b", kafka_bootstrap=None)) as second:
        assert first.bootstrap != second.bootstrap
        assert first.broker.pid != second.broker.pid


def test_an_exception_in_the_block_still_stops_the_broker(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with EmbeddedRuntime(Settings(data_dir=tmp_path, kafka_bootstrap=None)) as runtime:
            pid = runtime.broker.pid
            raise KeyboardInterrupt

    assert _gone(pid)


def test_with_a_bootstrap_set_it_only_creates_topics_there(tmp_path: Path, kafka_bootstrap: str) -> None:
    prefix = f"external-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix)

    with EmbeddedRuntime(settings) as runtime:
        assert runtime.broker is None and runtime.bootstrap == kafka_bootstrap
        assert _partitions(kafka_bootstrap)[f"{prefix}.clickstream.events"] == settings.clickstream_partitions

    assert not _refuses_connections(kafka_bootstrap)  # someone else's broker keeps running


def test_parts_entered_later_stop_first(tmp_path: Path) -> None:
    from contextlib import contextmanager

    order: list[str] = []

    @contextmanager
    def part(name: str, runtime: EmbeddedRuntime):
        yield name
        order.append(f"{name} stopped while the broker was {'up' if runtime.broker.is_running() else 'down'}")

    with EmbeddedRuntime(Settings(data_dir=tmp_path, kafka_bootstrap=None)) as runtime:
        assert runtime.enter(part("worker", runtime)) == "worker"
        runtime.enter(part("trainer", runtime))

    assert order == ["trainer stopped while the broker was up", "worker stopped while the broker was up"]


def test_ensure_topics_is_idempotent_but_refuses_a_partition_count_that_differs(kafka_bootstrap: str) -> None:
    prefix = f"idem-{uuid.uuid4().hex[:8]}"
    registry = TopicRegistry(prefix=prefix, clickstream_partitions=3)

    assert ensure_topics(kafka_bootstrap, registry) == ensure_topics(kafka_bootstrap, registry)
    with pytest.raises(TopicMismatchError, match=f"{prefix}.clickstream.events: 3 partitions on the cluster, 5 in"):
        ensure_topics(kafka_bootstrap, TopicRegistry(prefix=prefix, clickstream_partitions=5))


def test_a_fixed_port_is_used_and_a_busy_one_is_reported(tmp_path: Path) -> None:
    with TansuBroker(log_path=tmp_path / "a.log") as first:
        port = first.port
        with pytest.raises(BrokerStartError, match=f"port {port}"):
            TansuBroker(port=port, log_path=tmp_path / "b.log", startup_timeout_s=1).start()
        assert first.is_running()

    # Killed, not terminated: the same port can be taken again at once.
    with TansuBroker(port=port, log_path=tmp_path / "c.log") as again:
        assert again.port == port


def test_the_broker_command_prints_its_address_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    env = {**os.environ, "ES_DATA_DIR": str(tmp_path), "ES_TOPIC_PREFIX": "fg"}
    env.pop("ES_KAFKA_BOOTSTRAP", None)
    cli = "import sys; from embedding_studio.cli import main; sys.exit(main(['broker']))"
    # Started as from a background job, which inherits SIGINT ignored: Ctrl-C (here `kill -INT`) must
    # still stop it, whatever the shell that runs the tests did with SIGINT.
    command = subprocess.Popen([sys.executable, "-c", cli], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        first = command.stdout.readline()
        assert first.startswith("broker ready: 127.0.0.1:"), command.stderr.read() if not first else first
        bootstrap = first.split()[2]
        assert _partitions(bootstrap)["fg.clickstream.events"] == 8

        command.send_signal(signal.SIGINT)

        assert command.wait(timeout=10) == 0
    finally:
        command.kill()
    assert _refuses_connections(bootstrap)


def test_waiting_on_the_broker_ends_on_ctrl_c_even_when_another_thread_receives_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    # The kernel may hand a process's SIGINT to any of its threads (librdkafka starts several); here it
    # goes to a helper thread on purpose. The main thread, waiting on the broker, must still stop.
    script = f"""
import signal, sys, threading, time
from pathlib import Path
from embedding_studio.embedded.broker import TansuBroker

signal.signal(signal.SIGINT, signal.default_int_handler)  # even when the test runs in a background job

def interrupt_from_another_thread():
    time.sleep(0.5)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

with TansuBroker(log_path=Path({str(tmp_path / "broker.log")!r})) as broker:
    print(broker.bootstrap, broker.pid, flush=True)
    threading.Thread(target=interrupt_from_another_thread).start()
    try:
        broker.wait()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""
    command = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    first = command.stdout.readline().split()
    try:
        out, _ = command.communicate(timeout=30)
    finally:
        command.kill()
        _stop_broker(int(first[1]) if len(first) == 2 else None)  # its own session: the kill above misses it
    bootstrap, said = first[0], out.strip()
    assert said == "interrupted"
    assert _refuses_connections(bootstrap)


def _stop_broker(pid: int | None) -> None:
    """Stop a broker a failed test left behind (a no-op when the code under test stopped it)."""
    import os
    import signal

    if pid is None:
        return
    try:
        if b"tansu" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # exited, and the number now belongs to someone else
        os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
