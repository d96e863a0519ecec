"""The streaming flow against the exchange simulator: what lands in the DB is the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from signalengine.simulator import market_bars, running_simulator
from tests.utils.net import free_port

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
ANCHOR = pd.Timestamp("2025-03-03 12:00", tz="UTC")


def _stored(db, symbol: str) -> pd.DataFrame:
    rows = db.execute(
        "SELECT ts, open, high, low, close, volume FROM klines WHERE symbol = %s ORDER BY ts",
        (symbol,),
    ).fetchall()
    return pd.DataFrame(rows)


def _truth(symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    bars = market_bars(symbol, int(start.value // 1_000_000), int(end.value // 1_000_000))
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(bars["ts"], unit="ms", utc=True),
            **{c: bars[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )


async def test_stream_stores_exactly_the_exchange_bars(db, prefect_harness, monkeypatch) -> None:
    from signalengine.flows.stream import stream

    anchor_ms = int(ANCHOR.value // 1_000_000)
    with running_simulator(symbols=SYMBOLS, speed=600, anchor_ms=anchor_ms) as url:
        monkeypatch.setenv("SIGNALENGINE_EXCHANGE_URL", url)
        monkeypatch.setenv("SIGNALENGINE_SYMBOLS", '["BTC/USDT", "ETH/USDT"]')
        monkeypatch.setenv("SIGNALENGINE_BACKFILL_DAYS", "0.5")
        monkeypatch.setenv("SIGNALENGINE_STREAM_METRICS_PORT", str(free_port()))
        summary = await stream(max_minutes=15)
    assert summary["minutes"] >= 15
    for symbol in SYMBOLS:
        stored = _stored(db, symbol)
        first, last = stored["ts"].iloc[0], stored["ts"].iloc[-1]
        # catch-up starts backfill_days before the exchange clock at start-up
        # (the sim clock runs 600x, so a slow start-up shifts it by sim hours)
        assert ANCHOR - pd.Timedelta(hours=12) <= first <= ANCHOR
        assert last >= ANCHOR + pd.Timedelta(minutes=15)
        truth = _truth(symbol, first, last + pd.Timedelta(minutes=1))
        assert len(stored) == len(truth)  # no gap, no duplicate
        stored["ts"] = pd.to_datetime(stored["ts"], utc=True)
        pd.testing.assert_frame_equal(stored, truth, check_exact=True, check_dtype=False)
    mark = db.execute("SELECT ts FROM stream_watermarks").fetchone()["ts"]
    assert pd.Timestamp(mark) >= ANCHOR
    assert np.isclose(pd.Timestamp(mark).minute % 5, 0)
