"""The simulator speaks Binance: REST klines, WebSocket kline streams, injected faults."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from signalengine.simulator import Faults, aggregate_bars, market_bars, running_simulator
from signalengine.simulator.market import EPOCH_MS, MINUTE_MS

SEED = 99
SPEED = 600.0  # a simulated minute lasts 0.1 s
KLINE_KEYS = {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with running_simulator(seed=SEED, speed=SPEED) as url:
        yield url


def _ws(url: str) -> str:
    return "ws" + url.removeprefix("http")


def _truth(symbol: str, t: int, minutes: int = 1) -> dict[str, float]:
    bars = market_bars(symbol, t, t + minutes * MINUTE_MS, seed=SEED)
    bar = aggregate_bars(bars, minutes, symbol=symbol)[0]
    return {name: float(bar[name]) for name in ("open", "high", "low", "close", "volume")}


def _values(k: dict[str, Any]) -> dict[str, float]:
    names = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
    return {name: float(k[key]) for key, name in names.items()}


def _klines(url: str, **params: Any) -> list[list[Any]]:
    rows: list[list[Any]] = httpx.get(f"{url}/api/v3/klines", params=params).json()
    return rows


def _status(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/sim/status").json()
    return body


async def _closed_klines(ws_url: str, count: int) -> list[dict[str, Any]]:
    """Every kline event until `count` closed ones arrived (raw, in arrival order)."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(ws_url) as ws:
        async with asyncio.timeout(10):
            while sum(e["k"]["x"] for e in events) < count:
                events.append(json.loads(await ws.recv()))
    return events


def test_rest_basics(sim_url: str) -> None:
    assert httpx.get(f"{sim_url}/api/v3/ping").json() == {}
    asked = time.monotonic()
    server_time = httpx.get(f"{sim_url}/api/v3/time").json()["serverTime"]
    status = _status(sim_url)
    # the two answers are as far apart in simulated time as the calls were in real time
    apart_ms = (time.monotonic() - asked) * SPEED * 1000
    assert status["speed"] == SPEED and status["seed"] == SEED
    assert status["symbols"] == ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
    assert 0 <= status["sim_time_ms"] - server_time <= apart_ms + 1_000
    info = httpx.get(f"{sim_url}/api/v3/exchangeInfo").json()
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == ("TRADING", "BTC", "USDT")
    assert {"PRICE_FILTER", "LOT_SIZE"} <= {f["filterType"] for f in btc["filters"]}
    one = httpx.get(f"{sim_url}/api/v3/exchangeInfo", params={"symbol": "ETHUSDT"}).json()
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]


def test_rest_klines_follow_binance(sim_url: str) -> None:
    asked = time.monotonic()
    latest = _klines(sim_url, symbol="BTCUSDT", interval="1m")
    now = httpx.get(f"{sim_url}/api/v3/time").json()["serverTime"]
    apart_ms = (time.monotonic() - asked) * SPEED * 1000  # sim time the two calls took
    assert len(latest) == 500  # default limit
    row = latest[-1]
    assert len(row) == 12 and row[11] == "0"
    assert all(isinstance(row[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10))
    assert row[6] == row[0] + MINUTE_MS - 1
    assert row[6] <= now  # closed bars only, never the open one
    assert now - row[6] <= 2 * MINUTE_MS + apart_ms  # the newest closed bar
    t = row[0]
    truth = _truth("BTC/USDT", t)
    assert [float(x) for x in row[1:6]] == [
        truth[n] for n in ("open", "high", "low", "close", "volume")
    ]

    start = t - 20 * MINUTE_MS
    btc = {"symbol": "BTCUSDT", "interval": "1m"}
    both = _klines(sim_url, **btc, startTime=start, endTime=start + 5 * MINUTE_MS)
    assert [r[0] for r in both] == [start + i * MINUTE_MS for i in range(6)]  # inclusive end
    after = _klines(sim_url, **btc, startTime=start + 1, limit=3)
    assert [r[0] for r in after] == [start + (i + 1) * MINUTE_MS for i in range(3)]
    before = _klines(sim_url, **btc, endTime=start, limit=2)
    assert [r[0] for r in before] == [start - MINUTE_MS, start]
    big = _klines(sim_url, **btc, startTime=EPOCH_MS, limit=5000)
    assert len(big) == 1000 and big[0][0] == EPOCH_MS
    future = _klines(sim_url, **btc, startTime=now + 10 * MINUTE_MS)
    assert future == []


def test_rest_higher_intervals_aggregate_1m(sim_url: str) -> None:
    for interval, minutes in [("5m", 5), ("15m", 15), ("1h", 60)]:
        rows = _klines(sim_url, symbol="ETHUSDT", interval=interval, limit=3)
        assert len(rows) == 3
        for row in rows:
            assert row[0] % (minutes * MINUTE_MS) == 0
            assert row[6] == row[0] + minutes * MINUTE_MS - 1
            truth = _truth("ETH/USDT", row[0], minutes)
            got = [float(x) for x in row[1:6]]
            assert got == [truth[n] for n in ("open", "high", "low", "close", "volume")]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
        ({"interval": "1m"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "abc"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": 2, "endTime": 1}, -1023),
    ],
)
def test_rest_errors_have_binance_bodies(sim_url: str, params: dict[str, Any], code: int) -> None:
    response = httpx.get(f"{sim_url}/api/v3/klines", params=params)
    assert response.status_code == 400
    assert response.json()["code"] == code


async def test_raw_stream_sends_binance_klines(sim_url: str) -> None:
    events = await _closed_klines(f"{_ws(sim_url)}/ws/btcusdt@kline_1m", 3)
    for event in events:
        assert set(event) == {"e", "E", "s", "k"}
        assert event["e"] == "kline" and event["s"] == "BTCUSDT"
        assert set(event["k"]) == KLINE_KEYS
        assert isinstance(event["k"]["o"], str) and isinstance(event["k"]["x"], bool)
    closed = [e["k"] for e in events if e["k"]["x"]]
    opens = [k["t"] for k in closed]
    assert opens == sorted(set(opens))  # exactly one x=true per bar, in order
    assert all(b - a == MINUTE_MS for a, b in zip(opens, opens[1:], strict=False))
    for k in closed:
        truth = _truth("BTC/USDT", k["t"])
        assert _values(k) == truth
        partials = [e["k"] for e in events if not e["k"]["x"] and e["k"]["t"] == k["t"]]
        for p in partials:  # partial values stay within the final bar
            assert float(p["o"]) == truth["open"]
            assert truth["low"] <= float(p["l"]) <= float(p["h"]) <= truth["high"]
            assert float(p["v"]) <= truth["volume"]
    assert any(not e["k"]["x"] for e in events)


async def _reply(ws: Any) -> dict[str, Any]:
    """The next answer to a request, past the kline events already flowing (at speed 600
    a 5m bar updates every few milliseconds of real time)."""
    async with asyncio.timeout(10):
        while "e" in (message := json.loads(await ws.recv())):
            pass
    return message


async def test_ccxt_style_subscribe_and_combined_stream(sim_url: str) -> None:
    async with websockets.connect(f"{_ws(sim_url)}/ws/0") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_5m"], "id": 1}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert await _reply(ws) == {"result": ["ethusdt@kline_5m"], "id": 2}
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nope@kline_1m"], "id": 3}))
        assert (await _reply(ws))["error"]["code"] == 2
        async with asyncio.timeout(10):
            while not (event := json.loads(await ws.recv())).get("k", {}).get("x"):
                pass
        assert event["k"]["i"] == "5m"
        assert _values(event["k"]) == _truth("ETH/USDT", event["k"]["t"], 5)

    url = f"{_ws(sim_url)}/stream?streams=btcusdt@kline_1m/solusdt@kline_1m"
    seen: set[str] = set()
    async with websockets.connect(url) as ws:
        async with asyncio.timeout(10):
            while seen != {"btcusdt@kline_1m", "solusdt@kline_1m"}:
                message = json.loads(await ws.recv())
                assert set(message) == {"stream", "data"}
                assert message["data"]["e"] == "kline"
                seen.add(message["stream"])


# --- faults -------------------------------------------------------------------------


def _is_malformed(k: dict[str, Any]) -> bool:
    values = [float(k[key]) for key in ("o", "h", "l", "c", "v")]
    return (
        any(math.isnan(v) for v in values)
        or float(k["h"]) < float(k["l"])
        or k["t"] % MINUTE_MS != 0
    )


async def test_fault_duplicates_and_malformed() -> None:
    faults = Faults(duplicate_rate=1.0, malformed_rate=1.0)
    with running_simulator(seed=SEED, speed=SPEED, faults=faults) as url:
        events = await _closed_klines(f"{_ws(url)}/ws/solusdt@kline_1m", 9)
        injected = _status(url)["injected"]
    closed = [e["k"] for e in events if e["k"]["x"]]
    bad = [k for k in closed if _is_malformed(k)]
    good = [k for k in closed if not _is_malformed(k)]
    assert len(bad) == 3 and len(good) == 6
    assert [k["t"] for k in good][::2] == [k["t"] for k in good][1::2]  # each one twice
    for k in good:
        assert _values(k) == _truth("SOL/USDT", k["t"])
    assert injected["duplicates"] >= 3 and injected["malformed"] >= 3


async def test_fault_out_of_order() -> None:
    with running_simulator(seed=SEED, speed=SPEED, faults=Faults(out_of_order_rate=1.0)) as url:
        events = await _closed_klines(f"{_ws(url)}/ws/bnbusdt@kline_1m", 4)
        injected = _status(url)["injected"]
    opens = [e["k"]["t"] for e in events if e["k"]["x"]]
    assert opens[1] == opens[0] - MINUTE_MS and opens[3] == opens[2] - MINUTE_MS
    assert sorted(opens) == [min(opens) + i * MINUTE_MS for i in range(4)]  # none lost
    assert injected["out_of_order"] >= 2


async def test_fault_ws_drop() -> None:
    with running_simulator(seed=SEED, speed=SPEED, faults=Faults(ws_drop_every_s=0.3)) as url:
        async with websockets.connect(f"{_ws(url)}/ws/btcusdt@kline_1m") as ws:
            with pytest.raises(websockets.ConnectionClosedOK):
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1001
        assert _status(url)["injected"]["ws_drops"] == 1


def test_fault_rest_429() -> None:
    with running_simulator(seed=SEED, speed=SPEED, faults=Faults(rest_429_every=2)) as url:
        codes = [httpx.get(f"{url}/api/v3/ping").status_code for _ in range(6)]
        limited = httpx.get(f"{url}/api/v3/time")
        assert codes == [200, 429] * 3
        assert limited.status_code == 200
        limited = httpx.get(f"{url}/api/v3/time")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "1"
        assert limited.json()["code"] == -1003
        assert _status(url)["injected"]["rest_429"] == 4
