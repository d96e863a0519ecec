"""`signalengine up` end to end: real processes, real ports, real connections."""

from __future__ import annotations

import json
import os
import shutil
import signal
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


async def test_up_runs_the_stack_and_stops_cleanly(state_dir: Path) -> None:
    ports = {
        name: free_port()
        for name in ("PREFECT", "MLFLOW", "SIM", "API", "STREAM_METRICS", "EMBEDDED_PG")
    }
    env = {k: v for k, v in os.environ.items() if k != "SIGNALENGINE_DATABASE_URL"}
    env.update({f"SIGNALENGINE_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(
        {
            "SIGNALENGINE_STATE_DIR": str(state_dir),
            "SIGNALENGINE_SIM_SPEED": "300",
            # a livelier market setting so that a signal shows within the test's patience
            "SIGNALENGINE_SIGNAL_SCORE_THRESHOLD": "0.3",
            "SIGNALENGINE_MTF_MIN_ALIGNED": "1",
            "SIGNALENGINE_COOLDOWN_BARS": "0",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "signalengine", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        api = f"http://127.0.0.1:{ports['API']}"
        try:
            wait_http(f"{api}/health", timeout=120, proc=proc)
        except AssertionError:
            proc.send_signal(signal.SIGINT)
            raise AssertionError(proc.communicate(timeout=60)[0].decode()) from None
        first, sig = await _connected_then_signal(f"ws://127.0.0.1:{ports['API']}/ws/feed", 90)
        assert first["type"] == "connected"
        assert sig["data"]["direction"] in {"long", "short"}
        assert sig["data"]["symbol"] in {"BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"}
        runs = httpx.post(
            f"http://127.0.0.1:{ports['PREFECT']}/api/flow_runs/filter",
            json={"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}},
        ).json()
        flows = httpx.post(f"http://127.0.0.1:{ports['PREFECT']}/api/flows/filter", json={}).json()
        names = {f["id"]: f["name"] for f in flows}
        assert "stream" in {names.get(r["flow_id"]) for r in runs}
        # the scheduler registers its deployments one after another: give it a moment
        deadline = time.monotonic() + 30
        while True:
            deployments = httpx.post(
                f"http://127.0.0.1:{ports['PREFECT']}/api/deployments/filter", json={}
            ).json()
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
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert len(descendants) >= 6
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    time.sleep(0.5)
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]
    assert f"http://127.0.0.1:{ports['PREFECT']}" in output
    import socket

    with socket.socket() as sock:  # the embedded PostgreSQL was stopped too
        assert sock.connect_ex(("127.0.0.1", ports["EMBEDDED_PG"])) != 0
