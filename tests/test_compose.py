"""docker-compose.yml and the Dockerfile, checked without Docker.

The file is read as Compose reads it: YAML (anchors and merge keys resolved), then ``${VAR}``,
``${VAR:-default}`` and ``$$`` interpolated from a given environment (none: every default). What
runs inside a container is checked against the code: our image's commands against the CLI's parser,
every ES_* variable against ``Settings``.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from embedding_studio.cli import build_parser
from schemas.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

_VARIABLE = re.compile(r"\$\$|\$\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(text: str, env: dict[str, str], *, escapes: bool = True) -> str:
    """Compose's interpolation (``escapes``: ``$$`` is a literal ``$``); without escapes, a POSIX
    shell's expansion of the same forms, as ``sh -c`` does inside a container."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$" if escapes else "$$"
        name = match.group("braced") or match.group("bare")
        op, default = match.group("op"), match.group("default") or ""
        value = env.get(name)
        if op in (":-", ":?"):
            unset = not value
        else:
            unset = value is None
        if unset and op and op.endswith("?"):
            raise KeyError(f"${{{name}}} is required")
        return default if unset and op else (value or "")

    return _VARIABLE.sub(replace, text)


def _interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return _interpolated(yaml.safe_load(COMPOSE_FILE.read_text()), env or {})


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping; None for a variable passed through from the shell."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(item) for item in value]


def uses_our_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    return context in (".", "./") or str(service.get("image", "")).startswith("embedding-studio")


OUR_SERVICES = sorted(name for name, service in SERVICES.items() if uses_our_image(service))


def options(args: list[str]) -> dict[str, str]:
    """``--name value`` and ``--name=value`` options of a command line."""
    found: dict[str, str] = {}
    for index, arg in enumerate(args):
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if eq:
                found[name] = value
            elif index + 1 < len(args) and not args[index + 1].startswith("--"):
                found[name] = args[index + 1]
    return found


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines())
        if parts
    ]


# --- the file -----------------------------------------------------------------------------------


def test_the_compose_file_parses_and_holds_every_part_of_the_system():
    assert set(SERVICES) >= {
        "kafka", "cassandra", "minio", "minio-buckets", "mlflow-db", "mlflow", "init", "stream-worker", "trainer",
        "milvus", "milvus-etcd", "milvus-minio", "indexer", "search",
    }
    declared_volumes = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        depends = service.get("depends_on") or {}
        assert set(depends) <= set(SERVICES), f"{name} depends on an unknown service"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"


def test_our_image_runs_the_cli_and_every_service_of_ours_runs_a_real_subcommand():
    entrypoint = next(args for instruction, args in dockerfile_instructions() if instruction == "ENTRYPOINT")
    assert argv(yaml.safe_load(entrypoint)) == ["embedding-studio"]
    parser = build_parser()
    commands = {}
    for name in OUR_SERVICES:
        service = SERVICES[name]
        if "entrypoint" in service:
            # Only the MLflow server borrows our image (it has mlflow, boto3 and psycopg2).
            assert name == "mlflow" and argv(service["entrypoint"]) == ["mlflow"], name
            continue
        command = argv(service.get("command"))
        assert command, f"{name} runs our image's default (--help)"
        args = parser.parse_args(command)  # an unknown subcommand or option exits here
        assert args.command == command[0]
        commands[name] = command[0]
    assert set(commands.values()) >= {"init", "worker", "trainer"}
    assert commands["init"] == "init" and commands["stream-worker"] == "worker" and commands["trainer"] == "trainer"
    assert commands["indexer"] == "indexer" and commands["search"] == "serve"


# --- settings -----------------------------------------------------------------------------------


def _es_variables() -> list[tuple[str, str, str | None]]:
    """(where, NAME, value) for every ES_* variable of the compose file and the Dockerfile."""
    found = [
        (name, key, value)
        for name, service in SERVICES.items()
        for key, value in environment(service).items()
        if key.startswith(ENV_PREFIX)
    ]
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                if key.startswith(ENV_PREFIX):
                    found.append(("Dockerfile", key, value))
    return found


def test_every_es_variable_is_a_setting():
    variables = _es_variables()
    assert {key for _, key, _ in variables} >= {"ES_KAFKA_BOOTSTRAP", "ES_STORE_URL", "ES_MLFLOW_TRACKING_URI"}
    unknown = sorted({f"{where}: {key}" for where, key, _ in variables
                      if key[len(ENV_PREFIX):].lower() not in Settings.model_fields})
    assert not unknown, f"not fields of schemas.settings.Settings (silently ignored): {unknown}"


@pytest.mark.parametrize("service_name", sorted(name for name in SERVICES if name in OUR_SERVICES))
def test_the_es_values_of_each_service_parse_into_settings(service_name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no developer's .env
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    values = {key: value for where, key, value in _es_variables() if where in (service_name, "Dockerfile")}
    for key, value in values.items():
        if value is not None:  # passed through from the shell: unset here
            monkeypatch.setenv(key, value)
    settings = Settings()
    for key, value in values.items():
        field = key[len(ENV_PREFIX):].lower()
        if value is None:
            continue
        assert field in settings.model_fields_set, key
        if Settings.model_fields[field].default is None:
            # An empty string is not "unset" to pydantic-settings: it would become the value.
            assert value.strip(), f"{key} is set to an empty string; leave it out (or give no value) instead"


def test_the_services_of_ours_point_at_the_services_of_the_file():
    settings = {key: value for where, key, value in _es_variables() if where == "trainer"}
    bootstrap = settings["ES_KAFKA_BOOTSTRAP"]
    host, port = host_port(bootstrap)
    assert host == "kafka"
    assert f"PLAINTEXT://{bootstrap}" in environment(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"].split(",")

    store = urlparse(settings["ES_STORE_URL"])
    assert store.scheme == "cassandra" and store.hostname == "cassandra" and store.port == 9042
    assert SERVICES["cassandra"]["image"].startswith("cassandra:")

    tracking = urlparse(settings["ES_MLFLOW_TRACKING_URI"])
    mlflow_options = options(argv(SERVICES["mlflow"]["command"]))
    assert tracking.hostname == "mlflow" and tracking.port == int(mlflow_options["--port"])
    assert mlflow_options["--host"] == "0.0.0.0"

    s3 = urlparse(settings["ES_S3_ENDPOINT_URL"])
    assert s3.hostname == "minio" and s3.port == 9000


# --- roles --------------------------------------------------------------------------------------


def test_the_trainer_reserves_an_nvidia_gpu_and_gets_a_cuda_torch():
    trainer = SERVICES["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert gpus, "no nvidia GPU reservation"
    assert gpus[0].get("count", "all") == "all" or int(gpus[0]["count"]) >= 1
    assert "/cu" in trainer["build"]["args"]["TORCH_INDEX"]
    for name in OUR_SERVICES:
        if name != "trainer":  # the others need no GPU: the small CPU build
            assert SERVICES[name]["build"]["args"]["TORCH_INDEX"].endswith("/cpu"), name
    assert trainer["image"] != SERVICES["stream-worker"]["image"]  # two builds, two tags


def test_stream_workers_scale_out_and_start_after_init():
    worker = SERVICES["stream-worker"]
    replicas = worker.get("scale", (worker.get("deploy") or {}).get("replicas"))
    assert replicas is not None and int(replicas) >= 2
    # Either would make `--scale stream-worker=N` fail: one name, one host port.
    assert "container_name" not in worker and not worker.get("ports")
    assert worker["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert SERVICES["trainer"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    init = SERVICES["init"]
    assert init.get("restart", "no") in ("no", "on-failure")  # a one-shot
    assert {"kafka", "cassandra"} <= set(init["depends_on"])
    # Every sessionizer process of the workers can own a clickstream partition.
    env = environment(worker)
    processes = int(env.get("ES_SESSIONIZER_PROCESSES") or Settings.model_fields["sessionizer_processes"].default)
    assert int(env["ES_CLICKSTREAM_PARTITIONS"]) >= int(replicas) * max(processes, 1)


def test_kafka_runs_in_kraft_mode_and_is_reachable_from_the_host():
    for name, service in SERVICES.items():
        assert "zookeeper" not in str(service.get("image", "")).lower(), name
        assert not any("ZOOKEEPER" in key for key in environment(service)), name
    kafka = SERVICES["kafka"]
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    protocols = dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    if "CLUSTER_ID" in env:  # else the image's default; a set one must be what kafka-storage.sh accepts
        assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    # The log directory is the volume, not the image's default under /tmp.
    mounts = {m.split(":", 1)[1] for m in kafka["volumes"]}
    assert env["KAFKA_LOG_DIRS"] in mounts
    # Producers outside Compose: an advertised listener on a published port.
    published = {int(p.split(":")[-1]) for p in kafka.get("ports", []) if str(p).count(":") >= 1}
    external = [address for name, address in advertised.items() if host_port(address)[0] != "kafka"]
    assert external and all(host_port(address)[1] in published for address in external)
    assert all(host_port(listeners[name])[1] in published for name, address in advertised.items()
               if address in external)


@pytest.mark.parametrize("env", [{}, {"MINIO_ROOT_USER": "alice", "MINIO_ROOT_PASSWORD": "s3cret-pw", "MLFLOW_DB_PASSWORD": "pg-pw"}])
def test_mlflow_keeps_runs_in_postgres_and_artifacts_on_minio_with_matching_credentials(env):
    services = load_compose(env)["services"]
    mlflow = services["mlflow"]
    args = options(argv(mlflow["command"]))

    backend = urlparse(args["--backend-store-uri"])
    assert backend.scheme in ("postgresql", "postgresql+psycopg2")
    database = services[backend.hostname]
    assert database["image"].startswith("postgres:")
    db_env = environment(database)
    assert (backend.username, backend.password, backend.path.lstrip("/"), backend.port) == (
        db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"], db_env["POSTGRES_DB"], 5432)
    assert mlflow["depends_on"][backend.hostname]["condition"] == "service_healthy"

    artifacts = urlparse(args["--artifacts-destination"])
    assert artifacts.scheme == "s3"
    mlflow_env = environment(mlflow)
    endpoint = urlparse(mlflow_env["MLFLOW_S3_ENDPOINT_URL"])
    minio = services[endpoint.hostname]
    assert minio["image"].startswith("minio/minio") and endpoint.port == 9000
    minio_env = environment(minio)
    root = (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])
    assert (mlflow_env["AWS_ACCESS_KEY_ID"], mlflow_env["AWS_SECRET_ACCESS_KEY"]) == root
    for name in OUR_SERVICES:  # item texts on MinIO: the same credentials
        service_env = environment(services[name])
        if "ES_S3_ENDPOINT_URL" in service_env:
            assert (service_env["AWS_ACCESS_KEY_ID"], service_env["AWS_SECRET_ACCESS_KEY"]) == root, name

    # The bucket exists before MLflow starts, created with the same credentials.
    buckets = services["minio-buckets"]
    script = interpolate(" ".join(argv(buckets["entrypoint"])[2:] or argv(buckets.get("command"))),
                         {k: v for k, v in environment(buckets).items() if v is not None}, escapes=False)
    alias = re.search(r"mc alias set (\S+) (\S+) (\S+) (\S+)", script)
    assert alias and alias.group(2) == "http://minio:9000"
    assert (alias.group(3).strip("\"'"), alias.group(4).strip("\"'")) == root
    assert f"{alias.group(1)}/{artifacts.netloc}" in script.split()
    assert mlflow["depends_on"]["minio-buckets"]["condition"] == "service_completed_successfully"

    # MLflow answers the Host header our services send, and the trainer waits until it does.
    allowed = mlflow_env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow:*" in allowed or f"mlflow:{args['--port']}" in allowed
    assert "healthcheck" in mlflow
    assert services["trainer"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert any(instruction == "RUN" and "psycopg" in arguments for instruction, arguments in dockerfile_instructions())


def test_the_dockerfile_installs_torch_before_the_project():
    instructions = dockerfile_instructions()
    runs = [(index, args) for index, (instruction, args) in enumerate(instructions) if instruction == "RUN"]
    torch_install = next(i for i, args in runs if re.search(r"pip install [\"']?torch==\$\{TORCH_VERSION\}", args))
    assert "--index-url" in instructions[torch_install][1] and "${TORCH_INDEX}" in instructions[torch_install][1]
    project_install = next(i for i, args in runs if re.search(r"pip install (\S+ )*\.( |$)", args))
    assert torch_install < project_install
    # Copying the sources comes after torch, so a code change does not reinstall torch.
    first_copy = next(i for i, (instruction, _) in enumerate(instructions) if instruction == "COPY")
    assert torch_install < first_copy
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for instruction, a in instructions if instruction == "ARG" and "=" in a}
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])


# --- the index ----------------------------------------------------------------------------------


def test_milvus_standalone_runs_on_its_etcd_and_minio_and_our_index_services_point_at_it():
    milvus = SERVICES["milvus"]
    assert milvus["image"].startswith("milvusdb/milvus:v2.") and argv(milvus["command"]) == ["milvus", "run", "standalone"]
    env = environment(milvus)
    etcd_host, etcd_port = host_port(env["ETCD_ENDPOINTS"])
    minio_host, minio_port = host_port(env["MINIO_ADDRESS"])
    assert SERVICES[etcd_host]["image"].startswith("quay.io/coreos/etcd:") and etcd_port == 2379
    assert f"-advertise-client-urls=http://{etcd_host}:2379" in argv(SERVICES[etcd_host]["command"])
    assert SERVICES[minio_host]["image"].startswith("minio/minio") and minio_port == 9000
    # Milvus' own MinIO runs on the credentials Milvus uses when none are configured.
    minio_env = environment(SERVICES[minio_host])
    assert (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"]) == ("minioadmin", "minioadmin")
    assert {etcd_host, minio_host} <= set(milvus["depends_on"])
    assert "healthcheck" in milvus

    for name in ("indexer", "search", "trainer", "stream-worker"):
        uri = urlparse(environment(SERVICES[name])["ES_MILVUS_URI"])
        assert (uri.hostname, uri.port) == ("milvus", 19530), name
    for name in ("indexer", "search"):
        assert SERVICES[name]["depends_on"]["milvus"]["condition"] == "service_healthy", name
        assert SERVICES[name]["depends_on"]["init"]["condition"] == "service_completed_successfully", name


def test_the_search_endpoint_listens_on_all_interfaces_on_its_published_port():
    search = SERVICES["search"]
    env = environment(search)
    assert env["ES_SEARCH_HOST"] == "0.0.0.0"
    published = {str(p).split(":")[-1] for p in search["ports"]}
    assert env["ES_SEARCH_PORT"] in published


# --- observability --------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _mounted(service: dict[str, Any], target: str) -> Path:
    """The repository path mounted at ``target`` in the service."""
    for mount in service.get("volumes") or []:
        source, _, rest = mount.partition(":")
        if rest.split(":")[0] == target:
            assert source.startswith("./"), f"{target} is not mounted from the repository"
            return REPO / source
    raise AssertionError(f"nothing mounted at {target}")


def _defined_metric_names() -> set[str]:
    """Every sample name the processes can expose (observability.metrics defines them all)."""
    from prometheus_client.metrics import MetricWrapperBase

    import observability.metrics as metrics

    names = {spec.name for spec, _ in metrics.STREAM_COUNTERS.values()}
    names |= {spec[0] for spec in (metrics.STREAM_OPEN_SESSIONS, metrics.STREAM_BATCH_SESSIONS,
                                   metrics.STREAM_BATCH_AGE, metrics.STREAM_CONSUMER_LAG)}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def test_prometheus_scrapes_the_metrics_port_of_every_service_of_ours_that_serves_one():
    prometheus = SERVICES["prometheus"]
    config = yaml.safe_load(_mounted(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    assert "--config.file=/etc/prometheus/prometheus.yml" in argv(prometheus["command"])
    targets: dict[str, set[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        found = targets.setdefault(job["job_name"], set())
        for static in job.get("static_configs", []):
            found |= {host_port(t) for t in static["targets"]}
        for dns in job.get("dns_sd_configs", []):
            found |= {(name, dns["port"]) for name in dns["names"]}
    for name in ("stream-worker", "trainer", "indexer", "search"):
        env = environment(SERVICES[name])
        assert env["ES_METRICS_HOST"] == "0.0.0.0", name  # reachable from the prometheus container
        assert targets[name] == {(name, int(env["ES_METRICS_PORT"]))}, name
    # Replicas of the stream worker are found by their DNS name, not a fixed list of one.
    assert next(j for j in config["scrape_configs"] if j["job_name"] == "stream-worker").get("dns_sd_configs")


def test_grafana_provisions_the_prometheus_datasource_and_the_data_path_dashboard():
    grafana = SERVICES["grafana"]
    assert "prometheus" in (grafana.get("depends_on") or [])
    provisioning = _mounted(grafana, "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert host_port(urlparse(datasource["url"]).netloc) == ("prometheus", 9090)
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "embedding-studio.yml").read_text())["providers"]
    dashboards = _mounted(grafana, provider["options"]["path"])
    dashboard = __import__("json").loads((dashboards / "embedding-studio.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    used = {name for p in panels for t in p["targets"] for name in re.findall(r"\bes_[a-z_]+", t["expr"])}
    assert used and not used - _defined_metric_names(), f"undefined metrics: {used - _defined_metric_names()}"
    # The rows follow the data, top to bottom: clickstream, sessions, batches, training, index, searches,
    # search quality.
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert [r.split(".")[0] for r in rows] == ["1", "2", "3", "4", "5", "6", "7"]
    prefixes = [next(n.split("_")[1] for t in p["targets"] for n in re.findall(r"\bes_[a-z_]+", t["expr"]))
                for p in sorted(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))]
    order = ["stream", "trainer", "index", "search"]
    assert [order.index(p) for p in prefixes] == sorted(order.index(p) for p in prefixes)
