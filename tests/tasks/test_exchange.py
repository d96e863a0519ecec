"""The ccxt adapter against the running simulator: the real ccxt code, no mocks."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from signalengine.simulator import Faults, aggregate_bars, market_bars, running_simulator
from signalengine.simulator.market import MINUTE_MS
from signalengine.tasks.marketdata.exchange import (
    ClosedBarBinance,
    ExchangeError,
    TemporaryExchangeError,
    connected_exchange,
    create_exchange,
    fetch_ohlcv_range,
    watch_closed_bars,
)

SEED = 7
SPEED = 600.0  # a simulated minute lasts 0.1 s
FIELDS = ("open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with running_simulator(seed=SEED, speed=SPEED) as url:
        yield url


@pytest.fixture
async def exchange(sim_url: str) -> AsyncIterator[Any]:
    async with connected_exchange(base_url=sim_url) as ex:
        yield ex


def _truth_rows(symbol: str, start_ms: int, end_ms: int, minutes: int = 1) -> list[list[float]]:
    bars = aggregate_bars(market_bars(symbol, start_ms, end_ms, seed=SEED), minutes, symbol=symbol)
    return [[int(b["ts"]), *(float(b[f]) for f in FIELDS)] for b in bars]


def _sim_now() -> int:
    return int(time.time() * 1000)  # anchor is real now and speed > 1: a safe lower bound


async def test_urls_point_at_the_simulator(sim_url: str) -> None:
    ex = create_exchange(base_url=sim_url)
    try:
        assert isinstance(ex, ClosedBarBinance)
        assert ex.urls["api"]["public"] == f"{sim_url}/api/v3"
        assert ex.urls["api"]["ws"]["spot"] == "ws" + sim_url.removeprefix("http") + "/ws"
        assert "binance.com" not in repr(ex.urls["api"])
        assert ex.enableRateLimit
        assert ex.options["fetchMarkets"]["types"] == ["spot"]
    finally:
        await ex.close()
    real = create_exchange(base_url=None)
    try:
        assert "binance.com" in real.urls["api"]["public"]
    finally:
        await real.close()


async def test_load_markets(exchange: Any) -> None:
    assert sorted(exchange.markets) == ["BNB/USDT", "BTC/USDT", "ETH/USDT", "SOL/USDT"]
    btc = exchange.market("BTC/USDT")
    assert btc["spot"] and btc["active"] and btc["id"] == "BTCUSDT"
    assert btc["precision"]["price"] == 0.01


async def test_fetch_ohlcv_equals_ground_truth(exchange: Any) -> None:
    since = _sim_now() // MINUTE_MS * MINUTE_MS - 2000 * MINUTE_MS
    got = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=1000)
    assert got == _truth_rows("BTC/USDT", since, since + 1000 * MINUTE_MS)
    hour = 60 * MINUTE_MS
    since_h = since // hour * hour + hour
    got_5m = await exchange.fetch_ohlcv("SOL/USDT", "5m", since=since_h, limit=12)
    assert got_5m == _truth_rows("SOL/USDT", since_h, since_h + hour, 5)


async def test_fetch_ohlcv_range_paginates(exchange: Any) -> None:
    until = _sim_now() // MINUTE_MS * MINUTE_MS - 10 * MINUTE_MS
    since = until - 2500 * MINUTE_MS + 17  # not on the minute: the first bar is the next one
    rows = await fetch_ohlcv_range(exchange, "ETH/USDT", since, until)
    assert len(rows) == 2499
    opens = [r[0] for r in rows]
    assert opens[0] == since - 17 + MINUTE_MS and opens[-1] == until - MINUTE_MS
    assert all(b - a == MINUTE_MS for a, b in zip(opens, opens[1:], strict=False))
    assert rows == _truth_rows("ETH/USDT", since, until)
    assert await fetch_ohlcv_range(exchange, "ETH/USDT", since, until) == rows  # idempotent
    assert await fetch_ohlcv_range(exchange, "ETH/USDT", until, until) == []


async def test_watch_closed_bars_equal_ground_truth(exchange: Any) -> None:
    symbols = ["BTC/USDT", "ETH/USDT"]
    received: list[Any] = []
    while {b.symbol for b in received} != set(symbols) or len(received) < 6:
        received += await watch_closed_bars(exchange, symbols)
    for bar in received:
        assert bar.exchange == "binance" and bar.timeframe == "1m"
        assert bar.raw["x"] is True and isinstance(bar.raw["c"], str)  # raw, as sent
        t = bar.raw["t"]
        assert [t, *(float(bar.raw[k]) for k in "ohlcv")] == _truth_rows(
            bar.symbol, t, t + MINUTE_MS
        )[0]
        row = bar.to_row()
        assert row["ts"] == t and row["symbol"] == bar.symbol and row["open"] == bar.raw["o"]
    by_symbol = [b.raw["t"] for b in received if b.symbol == "BTC/USDT"]
    assert by_symbol == sorted(set(by_symbol))  # each bar once, in order


async def test_malformed_closed_bars_are_kept_raw() -> None:
    with running_simulator(seed=SEED, speed=SPEED, faults=Faults(malformed_rate=1.0)) as url:
        async with connected_exchange(base_url=url) as ex:
            received: list[Any] = []
            while len(received) < 6:
                received += await watch_closed_bars(ex, ["BNB/USDT"])
    broken = [
        b.raw
        for b in received
        if b.raw["c"] == "NaN" or b.raw["t"] % MINUTE_MS or float(b.raw["h"]) < float(b.raw["l"])
    ]
    assert len(broken) == 3  # one before each genuine bar, untouched
    assert all(math.isfinite(float(b.raw["o"])) for b in received)


async def test_errors_are_translated(exchange: Any) -> None:
    with pytest.raises(ExchangeError):
        await fetch_ohlcv_range(exchange, "NOPE/USDT", 0, MINUTE_MS * 10)
    # the 3rd request (2nd page) is refused with 429
    with running_simulator(seed=SEED, speed=SPEED, faults=Faults(rest_429_every=3)) as url:
        async with connected_exchange(base_url=url) as ex:
            until = _sim_now() // MINUTE_MS * MINUTE_MS
            with pytest.raises(TemporaryExchangeError, match="429"):
                await fetch_ohlcv_range(ex, "BTC/USDT", until - 1500 * MINUTE_MS, until)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]  # bound but not listening: connection refused
        with pytest.raises(TemporaryExchangeError):
            async with connected_exchange(base_url=f"http://127.0.0.1:{dead_port}"):
                pass


async def test_dropped_stream_raises_temporary_then_recovers() -> None:
    with running_simulator(seed=SEED, speed=SPEED, faults=Faults(ws_drop_every_s=0.4)) as url:
        async with connected_exchange(base_url=url) as ex:
            received: list[Any] = []
            drops = 0
            while drops < 1 or len(received) < 8:
                try:
                    received += await watch_closed_bars(ex, ["SOL/USDT"])
                except TemporaryExchangeError:
                    drops += 1
    assert drops >= 1
    for bar in received:
        t = bar.raw["t"]
        assert [t, *(float(bar.raw[k]) for k in "ohlcv")] == _truth_rows(
            "SOL/USDT", t, t + MINUTE_MS
        )[0]
