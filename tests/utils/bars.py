"""Seeded synthetic 1m candles for engine tests and benchmarks (a regime-switching walk).

Regimes last ~4 h on average; each has its own drift (trending up, down or flat) and
volatility level, so EMA crosses, RSI extremes, band breakouts and volume spikes all
occur at realistic rates. Volume grows with the size of the bar's move, plus rare spikes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MINUTES_PER_DAY = 1440


def make_bars_1m(
    *,
    days: float = 3.0,
    minutes: int | None = None,
    seed: int = 7,
    start: str = "2024-01-01",
    price: float = 30_000.0,
    gap_fraction: float = 0.0,
) -> pd.DataFrame:
    """1m OHLCV frame indexed by UTC bar open time `ts` (ns); float64 columns.

    `gap_fraction` drops that share of minutes at random (exchanges skip quiet minutes).
    """
    n = int(minutes if minutes is not None else round(days * MINUTES_PER_DAY))
    rng = np.random.default_rng(seed)
    lengths = rng.exponential(240.0, size=n // 20 + 2).astype(np.int64) + 10
    regime = np.repeat(np.arange(lengths.size), lengths)[:n]
    drift = rng.choice([-1.0, 0.0, 1.0], size=lengths.size) * rng.uniform(1e-4, 4e-4, lengths.size)
    vol = rng.uniform(4e-4, 1.6e-3, size=lengths.size)
    sigma = vol[regime]
    shocks = rng.standard_t(df=4, size=n) / np.sqrt(2.0)
    log_ret = drift[regime] + sigma * shocks
    close = price * np.exp(np.cumsum(log_ret))
    open_ = np.r_[price, close[:-1]]
    wick_hi = np.exp(np.abs(rng.normal(0.0, 0.5, n)) * sigma)
    wick_lo = np.exp(-np.abs(rng.normal(0.0, 0.5, n)) * sigma)
    high = np.maximum(open_, close) * wick_hi
    low = np.minimum(open_, close) * wick_lo
    move = np.abs(log_ret) / sigma
    spikes = np.where(rng.random(n) < 0.004, rng.uniform(4.0, 10.0, n), 1.0)
    volume = rng.lognormal(2.0, 0.4, n) * (1.0 + move) * spikes
    ts = pd.date_range(start, periods=n, freq="1min", tz="UTC", name="ts").as_unit("ns")
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=ts
    )
    if gap_fraction > 0:
        frame = frame[rng.random(n) >= gap_fraction]
    return frame
