"""Bucket 1-minute candles into higher timeframes, the way the `klines_<tf>` relations do.

A bucket is `[ts, ts + timeframe)` aligned to the Unix epoch (UTC), labelled by its open
time `ts`: open = first open, high = max, low = min, close = last close, volume = sum,
`bars` = number of 1m bars in it. Buckets without any 1m bar are absent (as in the
database), so this equals `pandas.resample(tf, label="left", closed="left")` with empty
buckets dropped. A bucket is *closed* as of `t` when its end `ts + timeframe <= t`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from core.config import TIMEFRAME_MINUTES

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
MINUTE_NS: int = 60_000_000_000

__all__ = [
    "MINUTE_NS",
    "OHLCV_COLUMNS",
    "closed_bars",
    "index_ns",
    "resample_bars",
    "resample_closed",
    "timeframe_ns",
]


def timeframe_ns(timeframe: str) -> int:
    """Length of a timeframe ("5m", "1h", ...) in nanoseconds."""
    try:
        return TIMEFRAME_MINUTES[timeframe] * MINUTE_NS
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}") from None


def index_ns(bars: pd.DataFrame) -> NDArray[np.int64]:
    """Bar open times of a UTC-indexed frame as int64 nanoseconds since the epoch."""
    index = bars.index
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError("bars must be indexed by a DatetimeIndex of bar open times")
    if index.tz is None:
        raise ValueError("bar open times must be tz-aware (UTC)")
    if index.unit != "ns":  # as_unit costs tens of µs even when it changes nothing
        index = index.as_unit("ns")
    return np.asarray(index.asi8, dtype=np.int64)


def _ns_index(ts_ns: NDArray[np.int64]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(ts_ns, unit="ns", utc=True), name="ts")


def resample_bars(bars_1m: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Aggregate 1m bars into `timeframe` buckets.

    Input: frame indexed by UTC bar open time (strictly increasing) with float columns
    `open, high, low, close, volume`. Output: same columns plus `bars` (int64), indexed
    by the bucket open time (UTC, ns), one row per non-empty bucket.
    """
    ts = index_ns(bars_1m)
    if ts.size > 1 and not bool(np.all(np.diff(ts) > 0)):
        raise ValueError("bar open times must be strictly increasing")
    cols = {c: np.asarray(bars_1m[c], dtype=np.float64) for c in OHLCV_COLUMNS}
    width = timeframe_ns(timeframe)
    bucket = ts - np.mod(ts, width)
    if ts.size == 0:
        empty = pd.DataFrame({c: np.empty(0) for c in OHLCV_COLUMNS}, index=_ns_index(ts))
        empty["bars"] = np.empty(0, dtype=np.int64)
        return empty
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], ts.size]
    out = pd.DataFrame(
        {
            "open": cols["open"][starts],
            "high": np.maximum.reduceat(cols["high"], starts),
            "low": np.minimum.reduceat(cols["low"], starts),
            "close": cols["close"][ends - 1],
            "volume": np.add.reduceat(cols["volume"], starts),
            "bars": (ends - starts).astype(np.int64),
        },
        index=_ns_index(bucket[starts]),
    )
    return out


def closed_bars(bars: pd.DataFrame, timeframe: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """The rows of a `timeframe` frame whose bucket has closed by `as_of` (ts + tf <= as_of)."""
    ts = index_ns(bars)
    cutoff = int(pd.Timestamp(as_of).as_unit("ns").value) - timeframe_ns(timeframe)
    return bars.iloc[: int(np.searchsorted(ts, cutoff, side="right"))]


def resample_closed(bars_1m: pd.DataFrame, timeframe: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """`resample_bars` restricted to the buckets closed as of `as_of`.

    Only 1m bars that themselves closed by `as_of` are read, so a bucket still filling
    up never leaks into the result.
    """
    return closed_bars(
        resample_bars(closed_bars(bars_1m, "1m", as_of), timeframe), timeframe, as_of
    )
