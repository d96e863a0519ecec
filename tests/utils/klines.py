"""Factories for 1m kline frames (seeded, so every run sees the same bars)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_klines(
    *,
    symbol: str = "BTC/USDT",
    exchange: str = "binance",
    start: str = "2025-01-01",
    minutes: int = 3 * 1440,
    seed: int = 1,
    gap_fraction: float = 0.0,
) -> pd.DataFrame:
    """A consistent random walk of 1m bars in the storage layout; some minutes dropped."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=minutes, freq="1min", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, minutes)))
    open_ = np.r_[100.0, close[:-1]]
    spread = np.abs(rng.normal(0, 0.0008, minutes)) * close
    frame = pd.DataFrame(
        {
            "exchange": exchange,
            "symbol": symbol,
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.gamma(2.0, 5.0, minutes),
        }
    )
    if gap_fraction:
        frame = frame[rng.random(minutes) >= gap_fraction].reset_index(drop=True)
    return frame
