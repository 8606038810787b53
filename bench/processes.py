"""Child processes of the benches: a stream worker configured through ES_* variables, and its RSS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from schemas.topics import TopicRegistry


def es_env(bootstrap: str, topics: TopicRegistry, workdir: Path, **settings: object) -> dict[str, str]:
    return {
        **os.environ,
        "ES_KAFKA_BOOTSTRAP": bootstrap,
        "ES_TOPIC_PREFIX": topics.prefix,
        "ES_CLICKSTREAM_PARTITIONS": str(topics.clickstream_partitions),
        "ES_DATA_DIR": str(workdir / "data"),
        "ES_LOG_LEVEL": "WARNING",
        # Short group timeouts: tansu holds a join for about half of it.
        "ES_STREAM_SESSION_TIMEOUT_S": "2",
        "ES_STREAM_HEARTBEAT_INTERVAL_S": "0.5",
        **{f"ES_{name.upper()}": str(value) for name, value in settings.items()},
    }


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def worker_command() -> list[str]:
    script = Path(sys.executable).with_name("embedding-studio")
    if script.exists():
        return [str(script), "worker", "--no-topics"]
    return [sys.executable, "-c", "import sys; from embedding_studio.cli import main; sys.exit(main())",
            "worker", "--no-topics"]


def stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants (a worker and its sessionizer processes)."""
    return sum(rss_bytes(p) for p in _tree(pid))


def _tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found
