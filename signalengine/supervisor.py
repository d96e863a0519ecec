"""`signalengine up`: the whole stack on one machine, supervised, stopped cleanly on Ctrl-C.

Each child runs in its own process group so that stopping it also stops whatever it
spawned (Prefect's server and MLflow start workers of their own). A child that dies is
restarted with backoff; the streaming flow resumes from the database watermark.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from signalengine.core.config import Settings
from signalengine.core.errors import ConfigurationError
from signalengine.core.telemetry import TELEMETRY_OFF

STOP_GRACE_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 90.0
RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class Child:
    """One supervised process and how to (re)start it."""

    name: str
    argv: list[str]
    log: Path
    ready_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_ready(child: Child, deadline: float) -> None:
    assert child.ready_url is not None
    while time.monotonic() < deadline:
        if not child.alive():
            raise ConfigurationError(f"{child.name} exited at start; see {child.log}")
        try:
            if httpx.get(child.ready_url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise ConfigurationError(f"{child.name} not ready after {READY_TIMEOUT_SECONDS:.0f} s")


def _children(settings: Settings, env: dict[str, str]) -> list[Child]:
    state = settings.state_dir.resolve()
    logs = state / "logs"
    exe = [sys.executable, "-m", "signalengine"]
    mlflow_dir = state / "mlflow"
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    children = [
        Child(
            "prefect",
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.prefect_port),
            ],
            logs / "prefect.log",
            f"http://127.0.0.1:{settings.prefect_port}/api/health",
        ),
        Child(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(mlflow_dir / "artifacts"),
            ],
            logs / "mlflow.log",
            f"http://127.0.0.1:{settings.mlflow_port}/health",
        ),
        Child(
            "simulator",
            [*exe, "sim"],
            logs / "simulator.log",
            f"http://127.0.0.1:{settings.sim_port}/api/v3/ping",
        ),
        Child(
            "api", [*exe, "api"], logs / "api.log", f"http://127.0.0.1:{settings.api_port}/health"
        ),
        Child("stream", [*exe, "stream"], logs / "stream.log"),
        Child("scheduler", [*exe, "schedule"], logs / "scheduler.log"),
    ]
    for child in children:
        child.env = env
    return children


def _stack_env(settings: Settings, database_url: str) -> dict[str, str]:
    state = settings.state_dir.resolve()
    env = dict(os.environ)
    env.update(TELEMETRY_OFF)
    env.update(
        {
            "SIGNALENGINE_DATABASE_URL": database_url,
            "SIGNALENGINE_STATE_DIR": str(state),
            "SIGNALENGINE_EXCHANGE_URL": f"http://127.0.0.1:{settings.sim_port}",
            "SIGNALENGINE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{settings.mlflow_port}",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{settings.mlflow_port}",
            "PREFECT_API_URL": f"http://127.0.0.1:{settings.prefect_port}/api",
            "PREFECT_HOME": str(state / "prefect"),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{settings.prefect_port}/api",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
    )
    return env


def check_ports(settings: Settings) -> None:
    """Fail early, by name, when a port the stack needs is taken."""
    wanted = {
        "Prefect": settings.prefect_port,
        "MLflow": settings.mlflow_port,
        "simulator": settings.sim_port,
        "API": settings.api_port,
        "stream metrics": settings.stream_metrics_port,
    }
    busy = [f"{name} port {port}" for name, port in wanted.items() if not port_free(port)]
    if busy:
        raise ConfigurationError(
            "already in use on 127.0.0.1: "
            + ", ".join(busy)
            + " (stop the other program or set SIGNALENGINE_*_PORT)"
        )


def _stop_all(children: list[Child]) -> None:
    for child in reversed(children):
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        child.signal_group(signal.SIGKILL)  # anything left in the group, grandchildren too
        if child.alive():
            child.process.wait(timeout=5)


def _supervise(children: list[Child], stopping: list[bool]) -> None:
    while not stopping:
        now = time.monotonic()
        for child in children:
            if child.alive() or stopping:
                continue
            if child.next_start == 0.0:
                delay = RESTART_BACKOFF_SECONDS[
                    min(child.restarts, len(RESTART_BACKOFF_SECONDS) - 1)
                ]
                child.next_start = now + delay
                sys.stderr.write(
                    f"{child.name} exited; restarting in {delay:.0f} s (log: {child.log})\n"
                )
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()
        time.sleep(0.5)


def run_stack(settings: Settings) -> int:
    """Start every part, print where to look, supervise until SIGINT/SIGTERM."""
    from signalengine.core.embedded_pg import ensure_embedded_postgres
    from signalengine.tasks.marketdata.timeframes import upgrade_with_timeframes

    check_ports(settings)
    embedded = None
    database_url = settings.database_url
    if not database_url:
        embedded = ensure_embedded_postgres(settings.state_dir, port=settings.embedded_pg_port)
        database_url = embedded.url
    upgrade_with_timeframes(database_url, settings.timeframes)
    env = _stack_env(settings, database_url)
    children = _children(settings, env)
    stopping: list[bool] = []

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(True)

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        services = [c for c in children if c.ready_url]
        for child in services:
            child.start()
        for child in services:
            if not stopping:
                _wait_ready(child, deadline)
        # the stream needs the exchange, the database and Prefect's API from its first second
        for child in children:
            if not child.ready_url and not stopping:
                child.start()
        sys.stderr.write(_banner(settings, database_url) + "\n")
        sys.stderr.flush()
        _supervise(children, stopping)
    finally:
        _stop_all(children)
        if embedded is not None and embedded.started:
            embedded.stop()
    return 0


def _banner(settings: Settings, database_url: str) -> str:
    return "\n".join(
        [
            "SignalEngine is up:",
            f"  dashboard   http://127.0.0.1:{settings.api_port}/dashboard",
            f"  API         http://127.0.0.1:{settings.api_port}/docs",
            f"  metrics     http://127.0.0.1:{settings.api_port}/metrics",
            f"  Prefect UI  http://127.0.0.1:{settings.prefect_port}",
            f"  MLflow UI   http://127.0.0.1:{settings.mlflow_port}",
            f"  simulator   http://127.0.0.1:{settings.sim_port}",
            f"  database    {database_url}",
            "Press Ctrl-C to stop everything.",
        ]
    )
