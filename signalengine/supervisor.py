"""`signalengine up`: the whole stack on one machine, supervised, stopped cleanly on Ctrl-C.

Each child runs in its own process group so that stopping it also stops whatever it
spawned (Prefect's server and MLflow start workers of their own). A child that dies is
restarted with backoff; the streaming flow resumes from the database watermark.

At start, once Prefect and MLflow answer: runs of `stream` left Running by an earlier,
killed stack are marked Cancelled, the stream starts, and the stack file is written
(`signalengine.stack`). Beside the stream, one job after another: the automations are
applied, the simulator's recent history is backfilled (`SIGNALENGINE_DEMO_SEED_DAYS`,
the normal backfill path) and, on a state without any model, a first retrain runs, so
MLflow shows an experiment within minutes. At stop the stream gets SIGTERM first (it
ends its run Cancelled; a run left unfinished is marked Cancelled through Prefect's API),
then the other clients, then the servers they use.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import httpx

from signalengine.core.config import Settings
from signalengine.core.errors import ConfigurationError
from signalengine.core.telemetry import TELEMETRY_OFF
from signalengine.processes import Child, one_shot, run_to_end
from signalengine.stack import (
    cancel_stream_runs,
    has_trained_model,
    remove_stack_file,
    sim_anchor_ms,
    write_stack_file,
)

STOP_GRACE_SECONDS = 10.0
STREAM_CANCEL_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 90.0
RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


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


_READY_PATHS = {"binance": "/api/v3/ping", "bybit": "/v5/market/time"}  # per sim dialect


def local_simulators(settings: Settings) -> list[tuple[str, int, list[str]]]:
    """(exchange id, port, symbols) of each SIGNALENGINE_EXCHANGES venue whose URL is a
    port on this machine: `up` runs a simulator of that dialect there. Empty when unset."""
    found = []
    for venue in settings.exchanges or []:
        parts = urlsplit(venue.url or "")
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port is not None:
            found.append((venue.id, parts.port, list(venue.symbols)))
    return found


def _simulators(
    settings: Settings, exe: list[str], logs: Path, anchors: dict[str, int | None]
) -> list[Child]:
    """The simulator children: one at sim_port, or one per local venue of several."""

    def anchor(exchange: str) -> list[str]:
        value = anchors.get(exchange)
        return [] if value is None else ["--anchor-ms", str(value)]

    if settings.exchanges is None:
        return [
            Child(
                "simulator",
                [*exe, "sim", *anchor(settings.exchange)],
                logs / "simulator.log",
                f"http://127.0.0.1:{settings.sim_port}/api/v3/ping",
            )
        ]
    return [
        Child(
            f"simulator-{exchange}",
            [*exe, "sim", "--exchange", exchange, "--port", str(port)]
            + ["--symbols", ",".join(symbols), *anchor(exchange)],
            logs / f"simulator-{exchange}.log",
            f"http://127.0.0.1:{port}{_READY_PATHS[exchange]}",
        )
        for exchange, port, symbols in local_simulators(settings)
    ]


def _children(
    settings: Settings, env: dict[str, str], *, anchors: dict[str, int | None]
) -> list[Child]:
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
                # new experiments store artifacts as plain files, so the SQLite store
                # stays readable without this server (a command run after the demo)
                "--default-artifact-root",
                (mlflow_dir / "artifacts").as_uri(),
            ],
            logs / "mlflow.log",
            f"http://127.0.0.1:{settings.mlflow_port}/health",
        ),
        *_simulators(settings, exe, logs, anchors),
        Child(
            "api", [*exe, "api"], logs / "api.log", f"http://127.0.0.1:{settings.api_port}/health"
        ),
        Child("stream", [*exe, "stream"], logs / "stream.log"),
        Child("scheduler", [*exe, "schedule"], logs / "scheduler.log"),
    ]
    for child in children:
        child.env = env
    # MLflow's background job workers (one process each) serve features we do not use
    children[1].env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return children


def _urls(settings: Settings, database_url: str) -> dict[str, str]:
    return {
        "prefect_api_url": f"http://127.0.0.1:{settings.prefect_port}/api",
        "mlflow_tracking_uri": f"http://127.0.0.1:{settings.mlflow_port}",
        "exchange_url": f"http://127.0.0.1:{settings.sim_port}",
        "database_url": database_url,
    }


def _iso_minute(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms / 1000))


def _learn(
    settings: Settings,
    env: dict[str, str],
    stopping: list[bool],
    jobs: list[Child],
    *,
    anchors: dict[str, int | None],
    first_retrain: bool,
) -> None:
    """Automations; the seed history, then (on a fresh state) one retrain.

    Runs beside the stream (on a thread of `up`): the stream does not wait for any of it,
    and overlapping writes of the same bars are idempotent.
    """
    logs = settings.state_dir.resolve() / "logs"
    jobs.append(one_shot("automations", ["automations"], env=env, logs=logs))  # not waited
    for venue in settings.venues():  # each exchange's own history, from its own clock
        anchor_ms = anchors.get(venue.id)
        sim_now = anchor_ms if anchor_ms is not None else int(time.time() * 1000)
        until = sim_now // 60_000 * 60_000
        since = until - int(settings.demo_seed_days * 1440) * 60_000
        if anchor_ms is None:  # a fresh state: the stream's catch-up fetches the newest days
            until = max(since + 60_000, until - int(settings.backfill_days * 1440) * 60_000)
        seed = ["backfill", "--since", _iso_minute(since), "--until", _iso_minute(until)]
        if settings.exchanges is not None:
            seed += ["--exchange", venue.id]
        name = "seed-backfill" if settings.exchanges is None else f"seed-backfill-{venue.id}"
        jobs.append(one_shot(name, seed, env=env, logs=logs))
        run_to_end(jobs[-1], stopping)
        if stopping:
            return
    if first_retrain and not stopping:
        args = ["retrain", "--lookback-days", str(settings.demo_seed_days)]
        jobs.append(one_shot("first-retrain", args, env=env, logs=logs))


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
        "API": settings.api_port,
        "stream metrics": settings.stream_metrics_port,
    }
    if settings.exchanges is None:
        wanted["simulator"] = settings.sim_port
    for exchange, port, _ in local_simulators(settings):
        wanted[f"{exchange} simulator"] = port
    busy = [f"{name} port {port}" for name, port in wanted.items() if not port_free(port)]
    if busy:
        raise ConfigurationError(
            "already in use on 127.0.0.1: "
            + ", ".join(busy)
            + " (stop the other program or set SIGNALENGINE_*_PORT)"
        )


def _stop_all(children: list[Child], prefect_api_url: str | None = None) -> None:
    stream = next((c for c in children if c.name == "stream"), None)
    if prefect_api_url is not None and stream is not None and stream.process is not None:
        # SIGTERM asks the stream to finish its minute and end its run Cancelled; a run
        # still unfinished after that (the process died first) is marked Cancelled here,
        # while Prefect still answers
        stream.signal_group(signal.SIGTERM)
        try:
            stream.process.wait(timeout=STREAM_CANCEL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        try:
            cancel_stream_runs(prefect_api_url)
        except httpx.HTTPError as error:
            sys.stderr.write(f"could not mark the stream run Cancelled: {error}\n")
        if stream.alive():  # a second SIGTERM would make Prefect record the run Crashed
            sys.stderr.write(f"stream ignored SIGTERM for {STREAM_CANCEL_SECONDS:.0f} s\n")
            stream.signal_group(signal.SIGKILL)
    # clients first, then the servers they talk to: a Prefect server stopped under a
    # running client makes it log a closed-websocket traceback
    servers = {"prefect", "mlflow"}
    _terminate([c for c in children if c.name not in servers])
    _terminate([c for c in children if c.name in servers])


def _terminate(children: list[Child]) -> None:
    """SIGTERM each group, wait up to the grace period, then SIGKILL what is left."""
    for child in reversed(children):
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"{child.name} ignored SIGTERM for {STOP_GRACE_SECONDS:.0f} s\n")
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
    anchors = {v.id: sim_anchor_ms(database_url, exchange=v.id) for v in settings.venues()}
    children = _children(settings, env, anchors=anchors)
    stopping: list[bool] = []
    jobs: list[Child] = []
    first_retrain = not has_trained_model(database_url)
    learner: threading.Thread | None = None

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
        try:
            cancel_stream_runs(env["PREFECT_API_URL"])  # none runs yet: all are leftovers
        except httpx.HTTPError as error:
            sys.stderr.write(f"could not tidy earlier stream runs: {error}\n")
        # the stream needs the exchange, the database and Prefect's API from its first second
        for child in children:
            if not child.ready_url and not stopping:
                child.start()
        learner = threading.Thread(
            target=_learn,
            args=(settings, env, stopping, jobs),
            kwargs={"anchors": anchors, "first_retrain": first_retrain},
            name="learn",
            daemon=True,
        )
        learner.start()
        write_stack_file(settings.state_dir.resolve(), _urls(settings, database_url))
        sys.stderr.write(_banner(settings, database_url, first_retrain=first_retrain) + "\n")
        sys.stderr.flush()
        _supervise(children, stopping)
    finally:
        remove_stack_file(settings.state_dir.resolve())
        stopping.append(True)
        if learner is not None:
            learner.join(timeout=STOP_GRACE_SECONDS)
        _stop_all(jobs)
        _stop_all(children, env["PREFECT_API_URL"])
        if embedded is not None and embedded.started:
            embedded.stop()
    return 0


def _simulator_lines(settings: Settings) -> list[str]:
    if settings.exchanges is None:
        return [f"  simulator   http://127.0.0.1:{settings.sim_port}"]
    return [f"  {v.id:<11} {v.url or 'the real venue'}" for v in settings.venues()]


def _banner(settings: Settings, database_url: str, *, first_retrain: bool) -> str:
    logs = settings.state_dir.resolve() / "logs"
    learning = (
        f"  learning    {settings.demo_seed_days:g} days of history are backfilled, then a first"
        f" retrain runs ({logs / 'first-retrain.log'}); its run, model version and"
        f" importance chart appear in MLflow at"
        f" http://127.0.0.1:{settings.mlflow_port}/#/experiments within minutes"
        if first_retrain
        else "  learning    daily retrain; `signalengine retrain` trains one now"
    )
    return "\n".join(
        [
            "SignalEngine is up:",
            f"  dashboard   http://127.0.0.1:{settings.api_port}/dashboard",
            f"  API         http://127.0.0.1:{settings.api_port}/docs",
            f"  metrics     http://127.0.0.1:{settings.api_port}/metrics",
            f"  Prefect UI  http://127.0.0.1:{settings.prefect_port}",
            f"  MLflow UI   http://127.0.0.1:{settings.mlflow_port}",
            *_simulator_lines(settings),
            f"  database    {database_url}",
            learning,
            f"  clock       simulated time runs {settings.sim_speed:g}x real time (the dashboard"
            " shows exchange time, ahead of your clock)",
            "Other terminals: every `signalengine` command uses this stack's Prefect and MLflow.",
            "Press Ctrl-C to stop everything.",
        ]
    )
