"""Bucket 1-minute candles into higher timeframes, the way the `klines_<tf>` relations do.

A bucket is `[ts, ts + timeframe)` aligned to the Unix epoch (UTC), labelled by its open
time `ts`: open = first open, high = max, low = min, close = last close, volume = sum,
`bars` = number of 1m bars in it. Buckets without any 1m bar are absent (as in the
database), so this equals `pandas.resample(tf, label="left", closed="left")` with empty
buckets dropped. A bucket is *closed* as of `t` when its end `ts + timeframe <= t`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import TIMEFRAME_MINUTES, FloatArray

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
MINUTE_NS: int = 60_000_000_000


__all__ = [
    "MINUTE_NS",
    "OHLCV_COLUMNS",
    "aggregate_buckets",
    "ClosedSeries",
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
    if ts.size == 0:
        empty = pd.DataFrame({c: np.empty(0) for c in OHLCV_COLUMNS}, index=_ns_index(ts))
        empty["bars"] = np.empty(0, dtype=np.int64)
        return empty
    out = aggregate_buckets({"ts": ts, **cols}, width)
    bucket_ts = np.asarray(out.pop("ts"), dtype=np.int64)
    return pd.DataFrame(out, index=_ns_index(bucket_ts))


def aggregate_buckets(
    level: Mapping[str, NDArray[np.generic]], width_ns: int
) -> dict[str, NDArray[np.generic]]:
    """One level up: the buckets of `width_ns` of bars sorted by (`code`, `ts`).

    `level` holds equal-length arrays `ts` (int64 ns open times) and `open .. volume`;
    optionally `code` (a series id: buckets never span two codes) and `bars` (1m bars
    per input row; 1 each when absent). Returns the same keys for each non-empty
    bucket, `ts` = bucket open time aligned to the epoch: first open, max high, min low,
    last close, summed volume and bars. Both the engine (`resample_bars`) and the
    plain-PostgreSQL upkeep (`aggregate_new_bars`) bucket through here.

    A gapless series (the usual backtest input) takes `_aggregate_regular`: the same
    values bit for bit, without the per-row bucket arithmetic and `reduceat`.
    """
    if level.get("code") is None:
        regular = _aggregate_regular(level, width_ns)
        if regular is not None:
            return regular
    return _aggregate_segments(level, width_ns)


def _aggregate_segments(
    level: Mapping[str, NDArray[np.generic]], width_ns: int
) -> dict[str, NDArray[np.generic]]:
    """`aggregate_buckets` for any input: bucket starts found row by row, `reduceat`."""
    ts = level["ts"]
    bucket = ts - np.mod(ts, width_ns)
    change = bucket[1:] != bucket[:-1]
    code = level.get("code")
    if code is not None:
        change |= code[1:] != code[:-1]
    starts = np.flatnonzero(np.r_[True, change])
    ends = np.r_[starts[1:], ts.size]
    bars = level.get("bars")
    out: dict[str, NDArray[np.generic]] = {
        "ts": bucket[starts],
        "open": level["open"][starts],
        "high": np.maximum.reduceat(level["high"], starts),
        "low": np.minimum.reduceat(level["low"], starts),
        "close": level["close"][ends - 1],
        "volume": np.add.reduceat(level["volume"], starts),
        "bars": (ends - starts).astype(np.int64) if bars is None else np.add.reduceat(bars, starts),
    }
    if code is not None:
        out["code"] = code[starts]
    return out


# Rows per bucket up to which a strided sum adds in `np.add.reduceat`'s order: reduceat
# adds a segment's first value to the plain running sum of the others below 8 of them
# (numpy's pairwise summation unrolls from 8 on).
_MAX_REGULAR_ROWS = 8


def _aggregate_regular(
    level: Mapping[str, NDArray[np.generic]], width_ns: int
) -> dict[str, NDArray[np.generic]] | None:
    """`aggregate_buckets` of a gapless, evenly spaced series, or None when it is not one.

    With rows every `step` (dividing `width_ns`, on the step grid) every full bucket is
    `k` consecutive rows, so each column is reduced with k strided elementwise passes;
    the partial first and last buckets go through `_aggregate_segments`.
    """
    ts = np.asarray(level["ts"], dtype=np.int64)
    n = ts.size
    if n < 2:
        return None
    first, step = int(ts[0]), int(ts[1] - ts[0])
    if step <= 0 or width_ns % step or first % step or int(ts[-1]) - first != step * (n - 1):
        return None
    k = width_ns // step
    if not 2 <= k <= _MAX_REGULAR_ROWS or not bool(np.all(np.diff(ts) == step)):
        return None
    head = (-first % width_ns) // step  # rows before the first bucket boundary
    full = (n - head) // k if n > head else 0
    if full == 0:
        return None
    body = slice(head, head + full * k)
    parts: list[dict[str, NDArray[np.generic]]] = []
    if head:
        parts.append(_aggregate_segments({c: v[:head] for c, v in level.items()}, width_ns))
    parts.append(_regular_body(level, body, k, ts))
    if body.stop < n:
        tail = slice(body.stop, n)
        parts.append(_aggregate_segments({c: v[tail] for c, v in level.items()}, width_ns))
    if len(parts) == 1:
        return parts[0]
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


def _regular_body(
    level: Mapping[str, NDArray[np.generic]], body: slice, k: int, ts: NDArray[np.int64]
) -> dict[str, NDArray[np.generic]]:
    """Full buckets of k rows each over `body` (aligned: its first row opens a bucket).

    Each column is a (buckets, k) view, reduced one column at a time (its k strided
    passes in a row stay in cache) into arrays made once.
    """
    lo, hi = int(body.start), int(body.stop)
    width = k * int(ts[1] - ts[0])  # gapless rows: a bucket opens every `width` from ts[lo]

    def rows(name: str) -> FloatArray:
        return np.asarray(level[name][lo:hi], dtype=np.float64).reshape(-1, k)

    high = _fold(rows("high"), np.maximum, first=0)
    low = _fold(rows("low"), np.minimum, first=0)
    volume = rows("volume")
    # reduceat's order: the first value + the running sum of the others
    total = np.add(volume[:, 0], _fold(volume, np.add, first=1))
    bars = level.get("bars")
    if bars is None:
        counts = np.full(high.size, k, dtype=np.int64)
    else:
        counts = np.asarray(bars[lo:hi], dtype=np.int64).reshape(-1, k).sum(axis=1)
    return {
        "ts": ts[lo] + width * np.arange(high.size, dtype=np.int64),
        "open": rows("open")[:, 0].copy(),
        "high": high,
        "low": low,
        "close": rows("close")[:, k - 1].copy(),
        "volume": total,
        "bars": counts,
    }


def _fold(rows: FloatArray, op: np.ufunc, *, first: int) -> FloatArray:
    """op over columns first, first + 1, ... of a (buckets, k) view, left to right."""
    if rows.shape[1] - first < 2:
        return rows[:, first].copy()
    out: FloatArray = op(rows[:, first], rows[:, first + 1])
    for j in range(first + 2, rows.shape[1]):
        op(out, rows[:, j], out=out)
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


_NO_BARS = pd.DataFrame()  # placeholder frame of series built from arrays (never read)
# Frames from this many rows on (a backtest's history) are read column by column: one
# block copy of every column (fewer pandas calls, what short live windows want) would
# copy, and for a frame of several blocks interleave, the whole history first.
_COLUMNWISE_MIN_ROWS = 10_000


class ClosedSeries:
    """One timeframe's bars closed by `as_of_ns` (open + tf <= as_of), the last `window` rows.

    `bars`: frame indexed by UTC bar open time with OHLCV columns, of `timeframe` or, with
    `resample`, of 1m bars to bucket (`resample_bars`). `as_of_ns` None: every row;
    `window` None: no limit. Lazy: the bucketing, the open times and the arrays are made
    on first use, so a timeframe nobody reads costs nothing (the live engine reads the
    other timeframes only for a primary bar that fires).
    """

    def __init__(
        self,
        bars: pd.DataFrame,
        timeframe: str,
        *,
        as_of_ns: int | None,
        window: int | None,
        resample: bool = False,
    ) -> None:
        self._bars, self._timeframe, self._resample = bars, timeframe, resample
        self._as_of_ns, self._window = as_of_ns, window
        self._rows = slice(0, 0)
        self._ts: NDArray[np.int64] | None = None
        self._cols: dict[str, FloatArray] | None = None

    @classmethod
    def from_arrays(
        cls, timeframe: str, ts: NDArray[np.int64], cols: Mapping[str, FloatArray]
    ) -> ClosedSeries:
        """An already selected series: `ts` (int64 ns open times, ascending) and contiguous
        float64 OHLCV arrays of the same length (the live stream's in-memory windows)."""
        series = cls(_NO_BARS, timeframe, as_of_ns=None, window=None)
        series._ts = ts
        series._cols = {c: cols[c] for c in OHLCV_COLUMNS}
        return series

    def _select(self) -> NDArray[np.int64]:
        if self._resample:
            self._bars, self._resample = resample_bars(self._bars, self._timeframe), False
        ts = index_ns(self._bars)
        end = ts.size
        if self._as_of_ns is not None:
            end = int(np.searchsorted(ts, self._as_of_ns - timeframe_ns(self._timeframe), "right"))
        begin = max(0, end - self._window) if self._window is not None else 0
        self._rows = slice(begin, end)
        return ts[begin:end]

    @property
    def ts(self) -> NDArray[np.int64]:
        """Open times of the selected rows, int64 ns since the epoch (UTC), ascending."""
        if self._ts is None:
            self._ts = self._select()
        return self._ts

    @property
    def cols(self) -> dict[str, FloatArray]:
        """Contiguous float64 OHLCV arrays of the selected rows."""
        if self._cols is None:
            if self._ts is None:  # selects the rows
                self._ts = self._select()
            self._cols = {
                c: np.ascontiguousarray(a)
                for c, a in zip(OHLCV_COLUMNS, self._picked(), strict=True)
            }
        return self._cols

    def _picked(self) -> list[FloatArray]:
        """The selected rows of each OHLCV column (float64, maybe strided views)."""
        rows, bars = self._rows, self._bars
        if len(bars) < _COLUMNWISE_MIN_ROWS:
            try:  # one block copy when every column is numeric (the common case)
                where = [bars.columns.get_loc(c) for c in OHLCV_COLUMNS]
                values = bars.to_numpy(dtype=np.float64)
                return [values[rows, j] for j in where]
            except (TypeError, ValueError):
                pass
        return [bars[c].to_numpy(dtype=np.float64)[rows] for c in OHLCV_COLUMNS]
