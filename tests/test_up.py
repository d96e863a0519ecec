"""`signalengine up` end to end: real processes, real ports, real connections."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import websockets

from tests.utils.net import free_port
from tests.utils.processes import wait_http

pytestmark = pytest.mark.slow


async def _connected_then_signal(url: str, timeout: float) -> tuple[dict, dict]:
    import asyncio

    async with websockets.connect(url, open_timeout=10) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if message["type"] == "signal":
                return first, message
    raise AssertionError("no signal message in time")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not under pytest's basetemp: pytest resets its folder to 0700 at every session start,
    # which would lock the embedded server's system user out mid-test.
    path = Path(tempfile.mkdtemp(prefix="signalengine-up-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class _Up:
    """`signalengine up` as a child; its output is read line by line on a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        import threading

        self.lines: list[str] = []
        self.banner = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signalengine", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if line.startswith("Press Ctrl-C"):
                self.banner.set()

    def wait_banner(self, timeout: float) -> float:
        """Seconds until the banner; fails with the output when it does not come."""
        started = time.monotonic()
        if not self.banner.wait(timeout):
            self.stop()
            raise AssertionError("no banner:\n" + "".join(self.lines))
        return time.monotonic() - started

    def stop(self) -> str:
        """Ctrl-C, as a terminal sends it; the output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=90)
        self._reader.join(timeout=10)
        return "".join(self.lines)


def _stack_env(state_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SIGNALENGINE_DATABASE_URL", "PREFECT_API_URL", "MLFLOW_TRACKING_URI")
    }
    env.update({f"SIGNALENGINE_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(
        {
            "SIGNALENGINE_STATE_DIR": str(state_dir),
            "SIGNALENGINE_SIM_SPEED": "300",
            "SIGNALENGINE_SIGNAL_SCORE_THRESHOLD": "0.3",
            "SIGNALENGINE_MTF_MIN_ALIGNED": "1",
            "SIGNALENGINE_COOLDOWN_BARS": "0",
            "SIGNALENGINE_DEMO_SEED_DAYS": "5",
        }
    )
    return env


def _stream_runs(prefect: str) -> dict[str, str]:
    runs = httpx.post(
        f"{prefect}/api/flow_runs/filter", json={"flows": {"name": {"any_": ["stream"]}}}
    ).json()
    return {r["id"]: r["state_type"] for r in runs}


def _ws_klines(stream_metrics: str) -> float:
    text = httpx.get(stream_metrics).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("klines_stored_total{") and 'source="ws"' in line
    )


async def test_up_runs_the_stack_learns_at_start_and_restarts_cleanly(state_dir: Path) -> None:
    """The whole stack from one command: health, a signal on the feed, the scheduled
    deployments, both metrics pages; a first model within minutes (issue 15), one Prefect
    for every command; Ctrl-C stops every process it started; a restart on the same state
    streams at once with the old stream run Cancelled."""
    ports = {
        name: free_port()
        for name in ("PREFECT", "MLFLOW", "SIM", "API", "STREAM_METRICS", "EMBEDDED_PG")
    }
    env = _stack_env(state_dir, ports)
    api = f"http://127.0.0.1:{ports['API']}"
    prefect = f"http://127.0.0.1:{ports['PREFECT']}"
    mlflow = f"http://127.0.0.1:{ports['MLFLOW']}"
    up = _Up(env)
    try:
        up.wait_banner(240)
        stack = json.loads((state_dir / "stack.json").read_text())
        assert stack["prefect_api_url"] == f"{prefect}/api"
        wait_http(f"{api}/health", timeout=60, proc=up.proc)
        first, sig = await _connected_then_signal(f"ws://127.0.0.1:{ports['API']}/ws/feed", 90)
        assert first["type"] == "connected"
        assert sig["data"]["direction"] in {"long", "short"}
        assert sig["data"]["symbol"] in {"BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"}
        # the scheduler registers its deployments one after another: give it a moment
        deadline = time.monotonic() + 30
        while True:
            deployments = httpx.post(f"{prefect}/api/deployments/filter", json={}).json()
            served = {d["name"]: d for d in deployments}
            if {"settle", "rollups", "retrain"} <= set(served) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {"settle", "rollups", "retrain"} <= set(served)
        assert served["settle"]["schedules"][0]["schedule"]["interval"] == 60
        metrics = httpx.get(f"{api}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE http_requests_total counter" in metrics.text
        stream_metrics = httpx.get(f"http://127.0.0.1:{ports['STREAM_METRICS']}/metrics").text
        assert "collector_messages_total" in stream_metrics
        # within 3 minutes of the banner MLflow holds the first retrain's finished run
        deadline = time.monotonic() + 180
        finished: list[dict] = []
        while not finished and time.monotonic() < deadline:
            found = httpx.get(
                f"{mlflow}/api/2.0/mlflow/experiments/get-by-name",
                params={"experiment_name": "signalengine"},
            )
            if found.status_code == 200:
                experiment_id = found.json()["experiment"]["experiment_id"]
                runs = httpx.post(
                    f"{mlflow}/api/2.0/mlflow/runs/search",
                    json={"experiment_ids": [experiment_id]},
                ).json()
                finished = [r for r in runs.get("runs", []) if r["info"]["status"] == "FINISHED"]
            time.sleep(2)
        assert finished, "no finished retrain run in MLflow within 3 minutes of the banner"
        tags = {t["key"]: t["value"] for t in finished[0]["data"]["tags"]}
        assert tags["decision"] in {"promoted", "rejected"}
        decision = httpx.get(f"{api}/performance/model").json()
        assert decision["promoted"] == (tags["decision"] == "promoted")
        if not decision["promoted"]:
            assert decision["reason"] == tags["rejection_reason"] != ""
        assert httpx.get(f"{api}/performance/feature-importance").status_code == 200

        # a command from another terminal knows nothing but the state dir: its run lands in
        # the stack's Prefect (no temporary server of its own)
        other = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALENGINE_")}
        other.pop("PREFECT_API_URL", None)
        other["SIGNALENGINE_STATE_DIR"] = str(state_dir)
        done = subprocess.run(
            [sys.executable, "-m", "signalengine", "rollups"],
            env=other,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"{prefect}/runs/flow-run/" in done.stderr
        assert "temporary server" not in done.stderr
        automations = httpx.post(f"{prefect}/api/automations/filter", json={}).json()
        assert {"signalengine-rerun-crashed-stream"} <= {a["name"] for a in automations}
        first_runs = _stream_runs(prefect)
        assert list(first_runs.values()) == ["RUNNING"]
        descendants = psutil.Process(up.proc.pid).children(recursive=True)
        assert len(descendants) >= 6
    finally:
        output = up.stop()
    assert up.proc.returncode == 0, output
    assert not (state_dir / "stack.json").exists()
    # Ctrl-C stopped everything it started, the embedded PostgreSQL included
    time.sleep(0.5)
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]
    assert prefect in output
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", ports["EMBEDDED_PG"])) != 0

    second = _Up(env)
    try:
        second.wait_banner(240)
        runs = _stream_runs(prefect)
        # the first stack's stream run ended Cancelled at Ctrl-C, never left Running
        assert {runs[i] for i in first_runs} == {"CANCELLED"}
        # the simulator resumed after the stored bars: live bars and a signal within 60 s
        started = time.monotonic()
        first, sig = await _connected_then_signal(f"ws://127.0.0.1:{ports['API']}/ws/feed", 60)
        assert sig["type"] == "signal"
        metrics_url = f"http://127.0.0.1:{ports['STREAM_METRICS']}/metrics"
        while _ws_klines(metrics_url) == 0 and time.monotonic() - started < 60:
            time.sleep(1)
        assert _ws_klines(metrics_url) > 0
    finally:
        output = second.stop()
    assert second.proc.returncode == 0, output
    assert "Traceback" not in output
