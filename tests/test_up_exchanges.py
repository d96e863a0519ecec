"""`up` with SIGNALENGINE_EXCHANGES: one simulator per local venue, in its dialect, on its
port, with its symbols; the one at sim_port otherwise. The simulator command is run for
real to check that the command line `up` builds serves that dialect."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from signalengine.core.config import ExchangeVenue, Settings
from signalengine.supervisor import _children, check_ports, local_simulators
from tests.utils.net import free_port
from tests.utils.processes import running, signalengine, wait_http


def _settings(tmp_path: Path, ports: tuple[int, int]) -> Settings:
    venues = [
        ExchangeVenue(id="binance", url=f"http://127.0.0.1:{ports[0]}", symbols=["BTC/USDT"]),
        ExchangeVenue(id="bybit", url=f"http://127.0.0.1:{ports[1]}", symbols=["ETH/USDT"]),
    ]
    return Settings(state_dir=tmp_path, exchanges=venues)


def test_one_simulator_per_local_venue(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    settings = _settings(tmp_path, ports)
    assert local_simulators(settings) == [
        ("binance", ports[0], ["BTC/USDT"]),
        ("bybit", ports[1], ["ETH/USDT"]),
    ]
    children = _children(settings, {}, anchors={"binance": 123, "bybit": None})
    sims = {c.name: c for c in children if c.name.startswith("simulator")}
    assert set(sims) == {"simulator-binance", "simulator-bybit"}
    bybit = sims["simulator-bybit"]
    sim_args = bybit.argv[bybit.argv.index("sim") :]
    assert sim_args == [
        "sim",
        "--exchange",
        "bybit",
        "--port",
        str(ports[1]),
        "--symbols",
        "ETH/USDT",
    ]
    assert sims["simulator-binance"].argv[-2:] == ["--anchor-ms", "123"]
    assert bybit.ready_url == f"http://127.0.0.1:{ports[1]}/v5/market/time"
    check_ports(settings)  # both free

    single = _children(Settings(state_dir=tmp_path), {}, anchors={"binance": None})
    assert [c.name for c in single if c.name.startswith("simulator")] == ["simulator"]


def test_the_built_command_serves_the_dialect(tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path, (free_port(), port))
    child = next(c for c in _children(settings, {}, anchors={}) if c.name == "simulator-bybit")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALENGINE_")}
    proc = signalengine(child.argv[child.argv.index("sim") :], env=env, log=tmp_path / "sim.log")
    with running([proc]):
        wait_http(str(child.ready_url), timeout=60, proc=proc)
        listed = httpx.get(
            f"http://127.0.0.1:{port}/v5/market/instruments-info", params={"category": "spot"}
        ).json()["result"]["list"]
        status = httpx.get(f"http://127.0.0.1:{port}/sim/status").json()
    assert [i["symbol"] for i in listed] == ["ETHUSDT"]
    assert status["exchange"] == "bybit"
