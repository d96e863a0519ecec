"""ccxt's real `bybit` code against the simulator's Bybit v5 dialect: markets, paged
history (newest-first pages), closed bars only from the WebSocket, errors translated."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ccxt
import pytest

from signalengine.simulator import (
    Faults,
    aggregate_bars,
    market_bars,
    running_simulator,
    venue_seed,
)
from signalengine.simulator.market import MINUTE_MS
from signalengine.tasks.marketdata.exchange import (
    ClosedBarBybit,
    ExchangeError,
    RestPolicy,
    TemporaryExchangeError,
    connected_exchange,
    create_exchange,
    fetch_ohlcv_page,
    fetch_ohlcv_range,
    translate_error,
    watch_closed_bars,
)

SPEED = 600.0  # a simulated minute lasts 0.1 s
SEED = venue_seed("bybit")
FIELDS = ("open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with running_simulator(exchange="bybit", speed=SPEED) as url:
        yield url


@pytest.fixture
async def exchange(sim_url: str) -> AsyncIterator[Any]:
    async with connected_exchange("bybit", base_url=sim_url) as ex:
        yield ex


def _truth_rows(symbol: str, start_ms: int, end_ms: int, minutes: int = 1) -> list[list[float]]:
    bars = aggregate_bars(market_bars(symbol, start_ms, end_ms, seed=SEED), minutes, symbol=symbol)
    return [[int(b["ts"]), *(float(b[f]) for f in FIELDS)] for b in bars]


def _sim_now() -> int:
    return int(time.time() * 1000)  # anchor is real now and speed > 1: a safe lower bound


async def test_client_points_at_the_simulator(sim_url: str, exchange: Any) -> None:
    assert isinstance(exchange, ClosedBarBybit) and exchange.id == "bybit"
    assert exchange.urls["api"]["public"] == sim_url
    ws = "ws" + sim_url.removeprefix("http")
    assert exchange.urls["api"]["ws"]["public"]["spot"] == f"{ws}/v5/public/spot"
    assert "bybit.com" not in repr(exchange.urls["api"])
    assert exchange.enableRateLimit and exchange.rateLimit == 20  # ccxt's own for Bybit
    assert sorted(exchange.markets) == ["BNB/USDT", "BTC/USDT", "ETH/USDT", "SOL/USDT"]
    btc = exchange.market("BTC/USDT")
    assert btc["spot"] and btc["active"] and btc["id"] == "BTCUSDT"
    assert btc["precision"]["price"] == 0.01


async def test_fetch_ohlcv_equals_ground_truth_oldest_first(exchange: Any) -> None:
    since = _sim_now() // MINUTE_MS * MINUTE_MS - 2000 * MINUTE_MS
    got = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=1000)
    assert got == _truth_rows("BTC/USDT", since, since + 1000 * MINUTE_MS)  # ccxt re-sorts
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
    assert rows == _truth_rows("ETH/USDT", since, until)
    assert await fetch_ohlcv_range(exchange, "ETH/USDT", since, until) == rows  # idempotent
    page = await fetch_ohlcv_page(exchange, "ETH/USDT", since, until, policy=RestPolicy())
    assert page == rows[:1000]  # one page: the oldest 1000 of the range


async def test_watch_closed_bars_only_and_exact(exchange: Any) -> None:
    symbols = ["BTC/USDT", "ETH/USDT"]
    received: list[Any] = []
    while {b.symbol for b in received} != set(symbols) or len(received) < 6:
        received += await watch_closed_bars(exchange, symbols)
    for bar in received:
        assert bar.exchange == "bybit" and bar.timeframe == "1m"
        assert bar.raw["x"] is True and bar.raw["confirm"] is True
        assert isinstance(bar.raw["c"], str)  # as sent, in the keys the pipeline reads
        t = bar.raw["t"]
        assert bar.raw["T"] == t + MINUTE_MS - 1 and bar.event_ms is not None
        truth = _truth_rows(bar.symbol, t, t + MINUTE_MS)[0]
        assert [t, *(float(bar.raw[k]) for k in "ohlcv")] == truth
        row = bar.to_row()
        assert row["exchange"] == "bybit" and row["ts"] == t and row["close"] == bar.raw["c"]
    by_symbol = [b.raw["t"] for b in received if b.symbol == "BTC/USDT"]
    assert by_symbol == sorted(set(by_symbol))  # each closed bar once, in order
    # ccxt's own cache also saw the confirm=false updates: its newest candle may be forming
    assert exchange.ohlcvs["BTC/USDT"]["1m"]


async def test_malformed_closed_bars_are_kept_raw() -> None:
    faults = Faults(malformed_rate=1.0)
    with running_simulator(exchange="bybit", speed=SPEED, faults=faults) as url:
        async with connected_exchange("bybit", base_url=url) as ex:
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
    with pytest.raises(ExchangeError):  # ccxt BadSymbol: not a retryable error
        await fetch_ohlcv_range(exchange, "NOPE/USDT", 0, MINUTE_MS * 10)
    with pytest.raises(ccxt.BadRequest, match="10001") as refused:  # the venue's refusal
        await exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5000)
    error = translate_error(refused.value)
    assert isinstance(error, ExchangeError) and not isinstance(error, TemporaryExchangeError)
    # every 3rd request is refused with retCode 10006: RateLimitExceeded, retried by policy
    with running_simulator(exchange="bybit", speed=SPEED, faults=Faults(rest_429_every=3)) as url:
        async with connected_exchange("bybit", base_url=url) as ex:
            until = _sim_now() // MINUTE_MS * MINUTE_MS
            with pytest.raises(TemporaryExchangeError, match="10006"):
                await fetch_ohlcv_range(ex, "BTC/USDT", until - 1500 * MINUTE_MS, until)
            retried: list[Exception] = []
            policy = RestPolicy(base_seconds=0.01, on_retry=retried.append)
            since = until - 3000 * MINUTE_MS
            pages = [
                await fetch_ohlcv_page(ex, "BTC/USDT", s, s + 1000 * MINUTE_MS, policy=policy)
                for s in range(since, until, 1000 * MINUTE_MS)  # the 3rd page is refused once
            ]
    assert retried and all(isinstance(e, TemporaryExchangeError) for e in retried)
    assert [r for page in pages for r in page] == _truth_rows("BTC/USDT", since, until)


async def test_the_real_venue_is_untouched() -> None:
    real = create_exchange("bybit")
    try:
        assert isinstance(real, ClosedBarBybit)
        assert "bybit.com" in real.implode_hostname(real.urls["api"]["public"])
    finally:
        await real.close()
