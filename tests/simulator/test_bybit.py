"""The simulator's Bybit v5 dialect on the wire: REST envelope, newest-first klines, errors,
the WebSocket kline topic with confirm=false updates then one closed bar."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from signalengine.simulator import (
    Faults,
    aggregate_bars,
    market_bars,
    running_simulator,
    venue_seed,
)
from signalengine.simulator.market import MINUTE_MS

SPEED = 600.0  # a simulated minute lasts 0.1 s
T0 = 1_740_000_000_000  # 2025-02-19T21:20Z, a minute boundary
FIELDS = ("open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with running_simulator(exchange="bybit", speed=SPEED) as url:
        yield url


def _get(url: str, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{url}{path}", params=params)
    assert response.status_code == 200  # Bybit answers errors with HTTP 200 and a retCode
    body: dict[str, Any] = response.json()
    assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    return body


def _klines(url: str, **params: Any) -> list[list[str]]:
    body = _get(url, "/v5/market/kline", category="spot", **params)
    assert body["retCode"] == 0, body
    rows: list[list[str]] = body["result"]["list"]
    return rows


def _truth(symbol: str, start: int, count: int, minutes: int = 1) -> list[list[float]]:
    end = start + count * minutes * MINUTE_MS
    bars = market_bars(symbol, start, end, seed=venue_seed("bybit"))
    rolled = aggregate_bars(bars, minutes, symbol=symbol)
    return [[float(b["ts"]), *(float(b[f]) for f in FIELDS)] for b in rolled]


def test_default_seed_differs_from_binance(sim_url: str) -> None:
    status = httpx.get(f"{sim_url}/sim/status").json()
    assert status["exchange"] == "bybit"
    assert status["seed"] == venue_seed("bybit") != venue_seed("binance")
    ours = market_bars("BTC/USDT", T0, T0 + 10 * MINUTE_MS, seed=venue_seed("bybit"))
    binance = market_bars("BTC/USDT", T0, T0 + 10 * MINUTE_MS, seed=venue_seed("binance"))
    assert (ours["close"] != binance["close"]).all()


def test_time_and_instruments(sim_url: str) -> None:
    body = _get(sim_url, "/v5/market/time")
    assert int(body["result"]["timeSecond"]) == int(body["result"]["timeNano"]) // 10**9
    listed = _get(sim_url, "/v5/market/instruments-info", category="spot")["result"]
    assert listed["category"] == "spot"
    btc = next(i for i in listed["list"] if i["symbol"] == "BTCUSDT")
    assert (btc["baseCoin"], btc["quoteCoin"], btc["status"]) == ("BTC", "USDT", "Trading")
    assert btc["priceFilter"]["tickSize"] == "0.01"
    one = _get(sim_url, "/v5/market/instruments-info", category="spot", symbol="ETHUSDT")
    assert [i["symbol"] for i in one["result"]["list"]] == ["ETHUSDT"]


def test_klines_newest_first_and_exact(sim_url: str) -> None:
    rows = _klines(sim_url, symbol="BTCUSDT", interval="1", start=T0, limit=30)
    assert len(rows) == 30 and all(len(r) == 7 and isinstance(r[0], str) for r in rows)
    starts = [int(r[0]) for r in rows]
    assert starts == sorted(starts, reverse=True) and starts[-1] == T0
    got = [[float(v) for v in r[:6]] for r in reversed(rows)]
    assert got == _truth("BTC/USDT", T0, 30)
    five = _klines(sim_url, symbol="ETHUSDT", interval="5", start=T0, end=T0 + 3_600_000)
    got5 = [[float(v) for v in r[:6]] for r in reversed(five)]
    assert got5 == _truth("ETH/USDT", T0, 13, minutes=5)  # start and end both inclusive


def test_klines_default_limit_and_only_closed_bars(sim_url: str) -> None:
    assert len(_klines(sim_url, symbol="BTCUSDT", interval="1", start=T0)) == 200
    before = int(_get(sim_url, "/v5/market/time")["time"])
    newest = int(_klines(sim_url, symbol="BTCUSDT", interval="1", limit=3)[0][0])
    after = int(_get(sim_url, "/v5/market/time")["time"])
    assert newest + MINUTE_MS <= after  # closed when served: the forming bar is not listed
    assert newest >= before // MINUTE_MS * MINUTE_MS - MINUTE_MS  # the newest closed one


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"symbol": "BTCUSDT", "interval": "1"}, "category"),  # no category
        ({"category": "linear", "symbol": "BTCUSDT", "interval": "1"}, "category"),
        ({"category": "spot", "symbol": "NOPEUSDT", "interval": "1"}, "Not supported symbols"),
        ({"category": "spot", "interval": "1"}, "symbol"),
        ({"category": "spot", "symbol": "BTCUSDT", "interval": "7"}, "Invalid interval"),
        ({"category": "spot", "symbol": "BTCUSDT", "interval": "1", "limit": "0"}, "limit"),
        ({"category": "spot", "symbol": "BTCUSDT", "interval": "1", "limit": "1001"}, "limit"),
        ({"category": "spot", "symbol": "BTCUSDT", "interval": "1", "start": "x"}, "start"),
        (
            {"category": "spot", "symbol": "BTCUSDT", "interval": "1", "start": "9", "end": "1"},
            "start",
        ),
    ],
)
def test_bad_parameters_get_retcode_10001(
    sim_url: str, params: dict[str, str], fragment: str
) -> None:
    body = _get(sim_url, "/v5/market/kline", **params)
    assert body["retCode"] == 10001 and fragment in body["retMsg"]
    assert body["result"] == {}


def test_rate_limit_fault_is_retcode_10006() -> None:
    with running_simulator(exchange="bybit", speed=SPEED, faults=Faults(rest_429_every=2)) as url:
        first, second = _get(url, "/v5/market/time"), httpx.get(f"{url}/v5/market/time")
        assert first["retCode"] == 0
        assert second.json()["retCode"] == 10006 and second.json()["retMsg"] == "Too many visits!"
        assert "x-bapi-limit-reset-timestamp" in second.headers
        assert httpx.get(f"{url}/sim/status").json()["injected"]["rest_429"] == 1


def _ws(url: str) -> str:
    return "ws" + url.removeprefix("http") + "/v5/public/spot"


async def _pushes(url: str, topics: list[str], closed: int) -> list[dict[str, Any]]:
    """Every kline push after subscribing, until `closed` confirmed candles arrived."""
    pushes: list[dict[str, Any]] = []
    async with websockets.connect(_ws(url)) as ws:
        await ws.send(json.dumps({"op": "subscribe", "req_id": "7", "args": topics}))
        ack = json.loads(await ws.recv())
        assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "7"
        async with asyncio.timeout(10):
            while sum(p["data"][0]["confirm"] for p in pushes) < closed:
                pushes.append(json.loads(await ws.recv()))
    return pushes


async def test_ws_updates_then_one_closed_bar_per_minute(sim_url: str) -> None:
    pushes = await _pushes(sim_url, ["kline.1.BTCUSDT"], closed=3)
    assert {p["topic"] for p in pushes} == {"kline.1.BTCUSDT"}
    assert all(p["type"] == "snapshot" and len(p["data"]) == 1 for p in pushes)
    candles = [p["data"][0] for p in pushes]
    final = [c for c in candles if c["confirm"]]
    starts = [c["start"] for c in final]
    assert starts == sorted(set(starts))  # each closed bar once, in order
    for candle in final:
        assert candle["end"] == candle["start"] + MINUTE_MS - 1
        assert candle["timestamp"] >= candle["end"]
        truth = _truth("BTC/USDT", candle["start"], 1)[0]
        assert [float(candle[f]) for f in FIELDS] == truth[1:]
    # in-progress updates of a minute come before its closed bar, flagged confirm=false
    for candle in final[1:]:
        earlier = [c for c in candles if c["start"] == candle["start"] and not c["confirm"]]
        assert earlier and candles.index(earlier[-1]) < candles.index(candle)


async def test_ws_ping_and_subscription_errors(sim_url: str) -> None:
    async with websockets.connect(_ws(sim_url)) as ws:
        await ws.send(json.dumps({"op": "ping", "req_id": "p1"}))
        pong = json.loads(await ws.recv())
        assert (pong["op"], pong["ret_msg"], pong["success"]) == ("ping", "pong", True)
        await ws.send(json.dumps({"op": "subscribe", "req_id": "s1", "args": ["kline.1.NOPE"]}))
        refused = json.loads(await ws.recv())
        assert refused["success"] is False and "kline.1.NOPE" in refused["ret_msg"]
        await ws.send("not json")
        assert json.loads(await ws.recv())["ret_msg"] == "error:invalid op"
