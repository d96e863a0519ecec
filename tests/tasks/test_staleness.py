"""Ingest staleness against the exchange's clock: ccxt against the simulator, real PostgreSQL."""

from __future__ import annotations

import asyncio

import pandas as pd
import psycopg

from signalengine.simulator import running_simulator
from signalengine.tasks import metrics
from signalengine.tasks.marketdata.exchange import RestPolicy, create_exchange
from signalengine.tasks.marketdata.ingest import Watermarks
from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.staleness import watch_staleness
from signalengine.tasks.marketdata.validation import validate_klines
from tests.utils.klines import random_klines

SYMBOL = "BTC/USDT"
LAST_OPEN = pd.Timestamp("2025-06-01 11:59", tz="UTC")  # newest stored bar closes at 12:00


async def _measure(db: psycopg.Connection, database_url: str, anchor: str) -> dict:
    anchor_ms = int(pd.Timestamp(anchor, tz="UTC").value // 1_000_000)
    with running_simulator(symbols=[SYMBOL], speed=1, anchor_ms=anchor_ms) as url:
        client = create_exchange("binance", base_url=url)
        marks = Watermarks.load(db, exchange="binance", symbols=[SYMBOL])
        task = asyncio.create_task(
            watch_staleness(
                client,
                marks,
                url=database_url,
                name="test:binance:all",
                policy=RestPolicy(),
                every=0.05,
            )
        )
        try:
            for _ in range(200):
                row = db.execute("SELECT * FROM stream_health WHERE name = 'test:binance:all'")
                found = row.fetchone()
                if found is not None:
                    return found
                await asyncio.sleep(0.05)
            raise AssertionError("no stream_health row")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
            db.execute("DELETE FROM stream_health")


async def test_a_stall_shows_as_lag_against_the_exchange_clock(db, database_url) -> None:
    frame = random_klines(symbol=SYMBOL, start=str(LAST_OPEN - pd.Timedelta("59min")), minutes=60)
    store_klines(db, validate_klines(frame), timeframes=["1m", "5m", "15m", "1h"])
    # no bar arrives, but the exchange's clock is 30 minutes past the newest stored close
    stalled = await _measure(db, database_url, "2025-06-01 12:30")
    assert 1800 <= stalled["lag_seconds"] < 1800 + 30
    assert pd.Timestamp(stalled["newest_close"]) == LAST_OPEN + pd.Timedelta("1min")
    lag = metrics.REGISTRY.get_sample_value("stream_ingest_lag_seconds", {"exchange": "binance"})
    assert lag is not None and lag >= 1800
    # a simulator restarted at an earlier time: its clock is behind the stored bars
    behind = await _measure(db, database_url, "2025-06-01 11:00")
    assert -3600 <= behind["lag_seconds"] < -3600 + 30
