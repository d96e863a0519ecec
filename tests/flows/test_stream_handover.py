"""A complete minute reaches evaluation before it is stored, and its commit is awaitable; a
minute with a missing bar reaches it only once stored, with the bar filled over REST."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import psycopg
from prefect import flow

from signalengine.core.dbconn import ReconnectingConnection
from signalengine.simulator import running_simulator
from signalengine.tasks.marketdata.exchange import create_exchange
from signalengine.tasks.marketdata.ingest import Watermarks
from tests.utils.market import market_frame, store_market

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
TIMEFRAMES = ["1m", "5m", "15m", "1h"]
START = pd.Timestamp("2025-04-07", tz="UTC")
MS = 1_000_000
OHLCV = ("open", "high", "low", "close", "volume")


def _raw(symbol: str, minute: pd.Timestamp) -> list[dict[str, Any]]:
    """The minute's closed bar as the Binance WebSocket sends it (`k`)."""
    row = market_frame(symbol, str(minute), 1 / 1440).iloc[0]
    values = {k: str(row[c]) for k, c in zip("ohlcv", OHLCV, strict=True)}
    return [{"t": int(row["ts"].value // MS), "x": True, **values}]


def _stored(database_url: str, minute: pd.Timestamp) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM klines WHERE ts = %s", (minute,)).fetchone()
    return int(row[0]) if row else 0


@flow
async def _two_minutes(database_url: str, url: str) -> list[dict[str, Any]]:
    """What evaluation saw of each minute (a flow run: ingest_minute is a Prefect task)."""
    from signalengine.flows.stream import StoredMinute, _take_minute

    seen: list[dict[str, Any]] = []
    db = ReconnectingConnection(database_url)
    client = create_exchange("binance", base_url=url)
    marks = Watermarks.load(db.get(), exchange="binance", symbols=SYMBOLS)
    marks.journal = True  # as the stream has it once caught up
    queue: asyncio.Queue[StoredMinute | None] = asyncio.Queue(maxsize=4)

    async def evaluation() -> int:
        while (item := await queue.get()) is not None:
            minute = pd.Timestamp((item.upto_ms - 60_000) * MS, tz="UTC")
            record = {"early": item.commit is not None, "at_receipt": _stored(database_url, minute)}
            if item.commit is not None:
                await asyncio.to_thread(item.commit.wait)
            record["after_commit"] = _stored(database_url, minute)
            record["symbols"] = sorted(item.stored["symbol"])
            seen.append(record)
        return len(seen)

    task = asyncio.create_task(evaluation())
    first = START + pd.Timedelta(hours=2)
    try:
        for minute, present in ((first, SYMBOLS), (first + pd.Timedelta(minutes=1), SYMBOLS[:1])):
            bars = {s: _raw(s, minute) for s in present}
            await _take_minute(
                db,
                client,
                marks,
                minute_ms=int(minute.value // MS),
                bars=bars,
                timeframes=TIMEFRAMES,
                acquire=None,
                handover=(queue, task),
            )
        await queue.put(None)
        await task
    finally:
        await client.close()
        db.close()
    return seen


def test_complete_minutes_go_first_and_incomplete_ones_once_stored(
    db, database_url, prefect_harness
) -> None:  # type: ignore[no-untyped-def]
    store_market(db, SYMBOLS, str(START), 2 / 24)  # up to the first minute streamed
    anchor = int((START + pd.Timedelta(hours=3)).value // MS)
    with running_simulator(symbols=SYMBOLS, speed=1, anchor_ms=anchor, seed=42) as url:
        seen = asyncio.run(_two_minutes(database_url, url))
    complete, missing_eth = seen
    # handed over before a single bar of it was stored; both stored at its commit
    assert complete == {
        "early": True,
        "at_receipt": 0,
        "after_commit": 2,
        "symbols": SYMBOLS,
    }
    # ETH's bar never came over the WebSocket: the minute waited for the REST fill
    assert missing_eth == {
        "early": False,
        "at_receipt": 2,
        "after_commit": 2,
        "symbols": SYMBOLS,
    }
