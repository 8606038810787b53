"""The installed wheel works from any directory: the default fine-tuning method ships inside the
package, so `embedding-studio up` run in an empty folder trains a closed batch with it.

The wheel is built from a copy of the project's files and installed into a fresh virtual environment
outside the repository; that environment sees the already-installed dependencies (torch, mlflow, ...)
through a .pth file, never the repository itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from schemas.base import utc_now
from schemas.batches import BatchClosed
from schemas.tasks import TaskState, TaskStatus
from session_store import open_store
from tests.fixtures.trainer import Feed, clickstream_batch

ROOT = Path(__file__).resolve().parents[1]


def _project_copy(destination: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv's python with the project installed from its wheel, and nothing of the repository."""
    work = tmp_path_factory.mktemp("wheel")
    source = _project_copy(work / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(work / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (work / "dist").glob("embedding_studio-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # Appended after the venv's own site-packages: the wheel's copy wins over the editable install.
    (site / "es-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    return python


def test_the_wheel_holds_the_default_method_and_not_the_repository(installed_wheel: Path, tmp_path: Path):
    probe = ("import trainer, plugins.default_fine_tuning_method as m; "
             "from trainer.plugin_loader import discover_plugins; "
             "r = discover_plugins(None); print(trainer.__file__); print(m.__file__); print(sorted(r.methods))")
    shown = subprocess.run([str(installed_wheel), "-c", probe], cwd=tmp_path, check=True, capture_output=True,
                           text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout
    trainer_file, method_file, methods = shown.splitlines()
    venv = installed_wheel.parents[1]
    assert Path(trainer_file).is_relative_to(venv) and Path(method_file).is_relative_to(venv)
    assert not Path(trainer_file).is_relative_to(ROOT)
    assert "Default Fine Tuning Method" in methods


@pytest.fixture(scope="module")
def six_layer_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The default method's parameter grid freezes up to 4 layers, as MiniLM's 6 allow.
    from simulation.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("six") / "model", layers=6)


def test_up_from_an_empty_folder_trains_with_the_packaged_default_method(
        installed_wheel: Path, tmp_path: Path, kafka_bootstrap: str, mlflow_uri: str, six_layer_model: Path):
    empty = tmp_path / "anywhere"
    empty.mkdir()
    prefix = f"pkg{os.getpid()}{int(time.time())}"
    store_url = f"sqlite:///{tmp_path / 'sessions.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ES_") and k != "PYTHONPATH"}
    env.update({
        "ES_KAFKA_BOOTSTRAP": kafka_bootstrap, "ES_MLFLOW_TRACKING_URI": mlflow_uri, "ES_STORE_URL": store_url,
        "ES_TOPIC_PREFIX": prefix, "ES_BASE_MODEL": str(six_layer_model), "ES_TRAIN_TRIALS": "1",
        "ES_TRAIN_EPOCHS": "1", "ES_STREAM_SESSION_TIMEOUT_S": "2", "ES_STREAM_HEARTBEAT_INTERVAL_S": "0.5",
        "PYTHONUNBUFFERED": "1",
    })
    script = installed_wheel.with_name("embedding-studio")
    assert script.read_text().startswith(f"#!{installed_wheel}")
    up = subprocess.Popen([str(script), "up", "--workers", "0", "--no-indexer", "--no-search"], cwd=empty, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    statuses = None
    try:
        banner = []
        while not banner or not banner[-1].startswith(("send clicks", "up:")) and banner[-1]:
            banner.append(up.stdout.readline())
        assert any(line.startswith("kafka") for line in banner), banner
        with open_store(store_url) as store:
            store.init_schema()
            store.open_batch("pkg-batch", utc_now())
            store.put_sessions("pkg-batch", clickstream_batch("pkg", 60))
            store.close_batch("pkg-batch", utc_now(), "size")
            batch = store.get_batch("pkg-batch")
        from confluent_kafka import Producer

        from schemas.topics import TopicRegistry

        topics = TopicRegistry(prefix=prefix)
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(topics.batches.name, key=b"pkg-batch", value=BatchClosed(
            batch_id="pkg-batch", session_count=batch.session_count, opened_at=batch.opened_at,
            closed_at=batch.closed_at, close_reason="size").model_dump_json().encode())
        assert producer.flush(10) == 0
        del producer
        statuses = Feed(kafka_bootstrap, topics.task_status.name, TaskStatus)
        final = statuses.wait(lambda events: next((e for e in events if e.status.is_final), None), 300,
                              "the task of the closed batch to finish")
        assert final.fine_tuning_method == "Default Fine Tuning Method"
        assert final.status == TaskState.done, final.detail
    finally:
        if statuses is not None:
            statuses.close()
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    assert not list(empty.glob("plugins*"))


def test_up_refuses_a_plugins_folder_that_does_not_exist(installed_wheel: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ES_") and k != "PYTHONPATH"}
    env["ES_PLUGINS_PATH"] = f"{tmp_path}{os.pathsep}{tmp_path / 'my-methods'}"

    ran = subprocess.run([str(installed_wheel.with_name("embedding-studio")), "up"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)

    assert ran.returncode != 0
    assert f"{tmp_path / 'my-methods'} (does not exist)" in ran.stderr
