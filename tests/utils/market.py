"""Simulator market data in the storage layout, written through the project's own path."""

from __future__ import annotations

import pandas as pd

from signalengine.simulator import market_bars
from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.validation import validate_klines


def market_frame(symbol: str, start: str, days: float, *, seed: int = 42) -> pd.DataFrame:
    """The simulator's ground-truth 1m bars for [start, start + days)."""
    begin = pd.Timestamp(start, tz="UTC")
    start_ms = int(begin.value // 1_000_000)
    bars = market_bars(symbol, start_ms, start_ms + int(days * 86_400_000), seed=seed)
    return pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "ts": pd.to_datetime(bars["ts"], unit="ms", utc=True),
            **{c: bars[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )


def store_market(
    conn, symbols: list[str], start: str, days: float, timeframes: list[str] | None = None
) -> int:  # type: ignore[no-untyped-def]
    """Store the market's bars for the symbols; returns bars inserted."""
    inserted = 0
    for symbol in symbols:
        frame = market_frame(symbol, start, days)
        result = store_klines(
            conn, validate_klines(frame), timeframes=timeframes or ["1m", "5m", "15m", "1h"]
        )
        inserted += result.inserted
    return inserted
