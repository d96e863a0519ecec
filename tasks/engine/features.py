"""Per-bar indicator features of one symbol and timeframe (trailing only: no look-ahead).

`compute_features(bars)` returns one row per input bar, same index. A value at row i
depends only on bars 0..i. Columns (n = bars of history a column needs before its first
finite value, for finite input):

| column         | definition                                                         | n  |
|----------------|--------------------------------------------------------------------|----|
| ema_12, ema_26 | TA-Lib EMA of close, alpha = 2/(n+1), seeded with the SMA          | 11, 25 |
| ema_slope      | 1-bar change of ema_12 in percent: 100 * (ema_12[i]/ema_12[i-1] - 1) | 12 |
| ema_spread_pct | 100 * (ema_12 - ema_26) / close                                    | 25 |
| rsi_14         | TA-Lib RSI(14), Wilder smoothing, 0..100                           | 14 |
| atr_14         | TA-Lib ATR(14), Wilder smoothing of the true range (price units)   | 14 |
| atr_pct        | 100 * atr_14 / close                                               | 14 |
| macd           | ema_12 - ema_26 (price units)                                      | 25 |
| macd_signal    | TA-Lib EMA(9) of macd                                              | 33 |
| macd_hist      | macd - macd_signal                                                 | 33 |
| bb_middle      | 20-bar simple mean of close                                        | 19 |
| bb_upper/lower | bb_middle +/- 2 * population std of the same 20 closes             | 19 |
| bb_pctb        | (close - bb_lower) / (bb_upper - bb_lower); 0.5 when the band is flat | 19 |
| bb_width_pct   | 100 * (bb_upper - bb_lower) / bb_middle                            | 19 |
| volume_z       | (volume - mean) / population std of the 20 *previous* volumes; 0 when flat | 20 |
| ret_1/5/20     | log return of close over 1 / 5 / 20 bars                           | 1, 5, 20 |
| rv_20          | 100 * population std of the last 20 ret_1 (per-bar volatility, %)  | 20 |

EMA, RSI and ATR are recursive; MACD's EMAs are seeded like `talib.EMA` (so macd equals
`talib.MACD` once the seeds have decayed). The 20-bar statistics are computed from each
window's own values (two-pass, fixed summation order) rather than with running sums, so
they are bit-identical whether the series starts 20 bars or a year earlier; that is what
lets the live window and the full-history backtest agree exactly. They match
`talib.BBANDS(20, 2, 2)` / `talib.STDDEV` to ~1e-12.

`feature_tails` gives the last rows of many series at once (the live batch): the
recursive columns over each whole series, the window-local ones (which read
WINDOW_LOOKBACK_BARS bars back) over all the series' tails stacked in one 2-D array;
the values are bit-identical to `feature_arrays`'.

`feature_arrays` returns a `FeatureArrays` mapping: the columns the event detectors read
at every bar are computed at once, ROW_COLUMNS (returns, rv_20 and the ratios, recorded
with each signal) when first read, or at the rows read only (`FeatureArrays.column_at`,
bit-identical: a backtest records a few hundred of a year's 105k rows).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import talib
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS

FEATURE_COLUMNS: tuple[str, ...] = (
    "ema_12",
    "ema_26",
    "ema_slope",
    "ema_spread_pct",
    "rsi_14",
    "atr_14",
    "atr_pct",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "bb_pctb",
    "bb_width_pct",
    "volume_z",
    "ret_1",
    "ret_5",
    "ret_20",
    "rv_20",
)
# The subset a timeframe needs to cast its MTF vote (see tasks.engine.mtf).
VOTE_COLUMNS: tuple[str, ...] = ("ema_12", "ema_26", "ema_slope", "rsi_14")
# Bars before every column is finite (macd_signal: 25 + 8).
FEATURE_WARMUP_BARS: int = 33
BB_PERIOD = 20
BB_DEVIATIONS = 2.0
VOLUME_PERIOD = 20
RV_PERIOD = 20
# Bars before a row that its window-local columns read (ret_20, rv_20 and volume_z: 20).
WINDOW_LOOKBACK_BARS = 20
# Columns no detector reads: `FeatureArrays` forms them when read (or at the rows read).
ROW_COLUMNS: tuple[str, ...] = (
    "ema_spread_pct",
    "atr_pct",
    "bb_pctb",
    "bb_width_pct",
    "ret_1",
    "ret_5",
    "ret_20",
    "rv_20",
)

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_WARMUP_BARS",
    "ROW_COLUMNS",
    "FeatureArrays",
    "VOTE_COLUMNS",
    "WINDOW_LOOKBACK_BARS",
    "compute_features",
    "ema_slope",
    "feature_arrays",
    "feature_tails",
    "frame_arrays",
    "rolling_mean_std",
    "vote_feature_arrays",
]


def _nan(shape: int | tuple[int, ...]) -> FloatArray:
    return np.full(shape, np.nan)


def _after_nan(shape: int | tuple[int, ...], lead: int) -> tuple[FloatArray, FloatArray]:
    """A new array whose first `lead` bars (last axis) are NaN, and a view of the others.

    The view is written in place (`out=`): the same operations in the same order as an
    expression, without its temporaries of the series' length.
    """
    out = np.empty(shape)
    out[..., :lead] = np.nan
    return out, out[..., lead:]


def rolling_mean_std(x: FloatArray, period: int) -> tuple[FloatArray, FloatArray]:
    """Trailing `period`-bar mean and population std along the last axis (bars), float64.

    `x` is one series (1-D) or a stack of series (2-D, one per row). Each value depends
    on its window only: sums are accumulated column by column in a fixed order
    (elementwise adds), so the result never depends on where the array starts, on
    memory alignment or on how many series are stacked.
    """
    n = x.shape[-1]
    if n < period:
        return _nan(x.shape), _nan(x.shape)
    k = n - period + 1
    mean, total = _after_nan(x.shape, period - 1)
    std, sq = _after_nan(x.shape, period - 1)
    np.copyto(total, x[..., 0:k])
    for j in range(1, period):
        np.add(total, x[..., j : j + k], out=total)
    m = np.divide(total, period, out=total)
    dev = np.empty(m.shape)
    for j in range(period):  # sq = sum over the window of (x - m)^2, in window order
        np.subtract(x[..., j : j + k], m, out=dev)
        np.multiply(dev, dev, out=sq if j == 0 else dev)
        if j:
            np.add(sq, dev, out=sq)
    np.divide(sq, period, out=sq)
    np.sqrt(sq, out=sq)
    return mean, std


def _log_return(close: FloatArray, lag: int) -> FloatArray:
    n = close.shape[-1]
    out, later = _after_nan(close.shape, min(lag, n))
    if n > lag:
        np.divide(close[..., lag:], close[..., :-lag], out=later)
        np.log(later, out=later)
    return out


def _present(x: FloatArray) -> int:
    """Non-NaN values of `x` (TA-Lib's EMA needs `period` of them)."""
    return int(x.size - np.count_nonzero(np.isnan(x)))


def _ema(x: FloatArray, period: int, present: int | None = None) -> FloatArray:
    if (_present(x) if present is None else present) < period:
        return _nan(x.size)
    return np.asarray(talib.EMA(x, timeperiod=period), dtype=np.float64)


def _slope(ema_12: FloatArray) -> FloatArray:
    """ema_slope: 100 * (ema_12[i] / ema_12[i-1] - 1) along the last axis, NaN first."""
    out, later = _after_nan(ema_12.shape, min(1, ema_12.shape[-1]))
    np.divide(ema_12[..., 1:], ema_12[..., :-1], out=later)
    np.subtract(later, 1.0, out=later)
    np.multiply(later, 100.0, out=later)
    return out


def ema_slope(ema_12: FloatArray, rows: NDArray[np.int64] | None = None) -> FloatArray:
    """The ema_slope column of a 1-D series' ema_12, or its values at `rows` only (each in
    0..len - 1; the same values): an MTF vote reads a few thousand of a year's 1m rows."""
    if rows is None:
        return _slope(ema_12)
    out = _nan(rows.size)
    later = rows > 0
    after = rows[later]
    out[later] = (ema_12[after] / ema_12[after - 1] - 1.0) * 100.0
    return out


def vote_feature_arrays(close: FloatArray, *, slope: bool = True) -> dict[str, FloatArray]:
    """`ema_12, ema_26, ema_slope, rsi_14` only: what an MTF vote reads (cheap).

    `slope` False leaves ema_slope out, for a caller that forms it where it is read
    (`ema_slope` at rows).
    """
    close = np.ascontiguousarray(close, dtype=np.float64)
    n = close.size
    present = _present(close)
    ema_12 = _ema(close, 12, present)
    out = {"ema_12": ema_12, "ema_26": _ema(close, 26, present)}
    if slope:
        out["ema_slope"] = _slope(ema_12)
    rsi = np.asarray(talib.RSI(close, timeperiod=14), dtype=np.float64) if n > 14 else _nan(n)
    out["rsi_14"] = rsi
    return out


def _recursive_arrays(
    high: FloatArray, low: FloatArray, close: FloatArray
) -> dict[str, FloatArray]:
    """The TA-Lib (recursive) columns of one 1-D series: EMAs, slope, RSI, ATR, MACD."""
    n = close.size
    out = vote_feature_arrays(close)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["atr_14"] = (
            np.asarray(talib.ATR(high, low, close, timeperiod=14)) if n > 14 else _nan(n)
        )
        macd = out["ema_12"] - out["ema_26"]
        signal = _ema(macd, 9)
        out["macd"], out["macd_signal"], out["macd_hist"] = macd, signal, macd - signal
    return out


_RECURSIVE_COLUMNS = (
    "ema_12",
    "ema_26",
    "ema_slope",
    "rsi_14",
    "atr_14",
    "macd",
    "macd_signal",
    "macd_hist",
)


def _recursive_tails(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    *,
    tail: int,
    out: dict[str, FloatArray],
    row: int,
) -> None:
    """Row `row` of `out` = the last `tail` rows of `_recursive_arrays(high, low, close)`.

    Bit for bit the same: the same TA-Lib calls over the whole series (their NaN rules
    too), while the elementwise columns (slope, MACD histogram) are computed on the tail
    only; the live stream runs this for every symbol at every primary close.
    """
    n = close.size
    present = _present(close)  # counted once for both EMAs
    ema_12, ema_26 = _ema(close, 12, present), _ema(close, 26, present)
    macd = ema_12 - ema_26
    signal = _ema(macd, 9)
    e = ema_12[-tail - 1 :]
    out["ema_12"][row], out["ema_26"][row] = e[1:], ema_26[-tail:]
    out["ema_slope"][row] = _slope(e)[1:]
    out["rsi_14"][row] = talib.RSI(close, timeperiod=14)[-tail:] if n > 14 else np.nan
    out["atr_14"][row] = talib.ATR(high, low, close, timeperiod=14)[-tail:] if n > 14 else np.nan
    m, sg = macd[-tail:], signal[-tail:]
    out["macd"][row], out["macd_signal"][row], out["macd_hist"][row] = m, sg, m - sg


def _window_arrays(close: FloatArray, volume: FloatArray) -> dict[str, FloatArray]:
    """The window-local columns (last axis = bars; 1-D or stacked 2-D): bands, volume_z,
    returns, rv_20. Row i reads rows i - WINDOW_LOOKBACK_BARS .. i only."""
    return {**_band_arrays(close, volume), **_return_arrays(close)}


def _band_arrays(close: FloatArray, volume: FloatArray) -> dict[str, FloatArray]:
    """Bollinger bands and volume_z (window-local; what the detectors read at every bar)."""
    out: dict[str, FloatArray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        mid, sd = rolling_mean_std(close, BB_PERIOD)
        band = np.multiply(sd, BB_DEVIATIONS, out=sd)  # sd is not kept
        out["bb_upper"], out["bb_middle"] = mid + band, mid
        out["bb_lower"] = np.subtract(mid, band, out=band)
        out["volume_z"] = _volume_z(volume)
    return out


def _return_arrays(close: FloatArray) -> dict[str, FloatArray]:
    """ret_1, ret_5, ret_20 and rv_20 (window-local)."""
    n = close.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ret_1 = _log_return(close, 1)
        out = {"ret_1": ret_1, "ret_5": _log_return(close, 5), "ret_20": _log_return(close, 20)}
        rv, later = _after_nan(close.shape, min(1, n))
        if n > 1:
            np.multiply(rolling_mean_std(ret_1[..., 1:], RV_PERIOD)[1], 100.0, out=later)
        out["rv_20"] = rv
    return out


def _volume_z(volume: FloatArray) -> FloatArray:
    """(volume - mean) / std of the VOLUME_PERIOD previous volumes; 0 where that std is 0,
    NaN where it is NaN (warm-up)."""
    n = volume.shape[-1]
    vol_mean, vol_sd = rolling_mean_std(volume, VOLUME_PERIOD)
    z, later = _after_nan(volume.shape, min(1, n))
    if n <= VOLUME_PERIOD:
        later.fill(np.nan)
        return z
    prev_mean, prev_sd = vol_mean[..., :-1], vol_sd[..., :-1]
    flat = ~(prev_sd > 0)
    np.subtract(volume[..., 1:], prev_mean, out=later)
    np.divide(later, np.where(flat, 1.0, prev_sd), out=later)
    later[flat] = 0.0
    later[np.isnan(prev_sd)] = np.nan
    return z


def _ratio_arrays(cols: Mapping[str, FloatArray], close: FloatArray) -> dict[str, FloatArray]:
    """The elementwise ratios: ema_spread_pct, atr_pct, bb_pctb, bb_width_pct."""
    out: dict[str, FloatArray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ema_spread_pct"] = (cols["ema_12"] - cols["ema_26"]) / close * 100.0
        out["atr_pct"] = cols["atr_14"] / close * 100.0
        upper, mid, lower = cols["bb_upper"], cols["bb_middle"], cols["bb_lower"]
        width = upper - lower
        pctb = np.where(width > 0, (close - lower) / np.where(width > 0, width, 1.0), 0.5)
        out["bb_pctb"] = np.where(np.isnan(width), np.nan, pctb)
        out["bb_width_pct"] = width / mid * 100.0
    return out


def _combined(
    recursive: dict[str, FloatArray], window: dict[str, FloatArray], close: FloatArray
) -> dict[str, FloatArray]:
    """FEATURE_COLUMNS from the two parts (same shape) plus the elementwise ratios."""
    out = {**recursive, **window}
    out |= _ratio_arrays(out, close)
    return {c: out[c] for c in FEATURE_COLUMNS}


def _contiguous(*arrays: FloatArray) -> list[FloatArray]:
    return [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]


class FeatureArrays(Mapping[str, FloatArray]):
    """FEATURE_COLUMNS of one 1-D series (what `feature_arrays` returns).

    The columns the detectors read at every bar are computed at once; ROW_COLUMNS (the
    returns, rv_20 and the ratios, read where a signal is recorded) on the first read of
    one of them, or at given rows only (`column_at`). Both are bit-identical: those
    columns are window-local or elementwise, computed by the same functions.
    """

    def __init__(
        self, high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray
    ) -> None:
        self._close = close
        self._cols = {**_recursive_arrays(high, low, close), **_band_arrays(close, volume)}
        self._at_rows: tuple[NDArray[np.int64], dict[str, FloatArray]] | None = None

    def __getitem__(self, name: str) -> FloatArray:
        if name in ROW_COLUMNS and name not in self._cols:
            self._cols |= _return_arrays(self._close)
            self._cols |= _ratio_arrays(self._cols, self._close)
        return self._cols[name]

    def __contains__(self, name: object) -> bool:
        return name in FEATURE_COLUMNS

    def __iter__(self) -> Iterator[str]:
        return iter(FEATURE_COLUMNS)

    def __len__(self) -> int:
        return len(FEATURE_COLUMNS)

    def column_at(self, name: str, rows: NDArray[np.int64]) -> FloatArray:
        """`self[name][rows]`, a row column formed at `rows` only unless it is whole."""
        if name not in ROW_COLUMNS or name in self._cols:
            return self[name][rows]
        return self._row_columns(rows)[name]

    def _row_columns(self, rows: NDArray[np.int64]) -> dict[str, FloatArray]:
        """ROW_COLUMNS at `rows`: the returns over each row's window (the bars before the
        first are NaN, as the warm-up is), the ratios from the other columns there."""
        if self._at_rows is not None and np.array_equal(self._at_rows[0], rows):
            return self._at_rows[1]
        window = rows[:, None] + np.arange(-WINDOW_LOOKBACK_BARS, 1)
        closes = np.where(window >= 0, self._close[np.maximum(window, 0)], np.nan)
        out = {name: v[:, -1] for name, v in _return_arrays(closes).items()}
        at = {name: v[rows] for name, v in self._cols.items()}
        out |= _ratio_arrays(at, self._close[rows])
        self._at_rows = (rows.copy(), out)
        return out


def feature_arrays(
    high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray
) -> FeatureArrays:
    """All FEATURE_COLUMNS for float64 high/low/close/volume arrays of one series."""
    return FeatureArrays(*_contiguous(high, low, close, volume))


def feature_tails(
    series: Sequence[tuple[FloatArray, FloatArray, FloatArray, FloatArray]], *, tail: int
) -> dict[str, FloatArray]:
    """The last `tail` rows of `feature_arrays` of many series, stacked: (len(series), tail).

    `series`: (high, low, close, volume) per series, each at least
    `tail + WINDOW_LOOKBACK_BARS` bars long. Row k equals `feature_arrays(*series[k])`'s
    last `tail` rows bit for bit: the recursive columns run over each whole series, the
    window-local ones over its last `tail + WINDOW_LOOKBACK_BARS` bars, all series at once.
    """
    span = tail + WINDOW_LOOKBACK_BARS
    if tail < 1 or any(cols[2].size < span for cols in series):
        raise ValueError(f"every series needs at least tail + {WINDOW_LOOKBACK_BARS} bars")
    stacked = {name: np.empty((len(series), tail)) for name in _RECURSIVE_COLUMNS}
    closes, volumes = np.empty((len(series), span)), np.empty((len(series), span))
    with np.errstate(divide="ignore", invalid="ignore"):  # once, not per series
        for k, cols in enumerate(series):
            high, low, close, volume = _contiguous(*cols)
            _recursive_tails(high, low, close, tail=tail, out=stacked, row=k)
            closes[k], volumes[k] = close[-span:], volume[-span:]
    window = {name: v[:, -tail:] for name, v in _window_arrays(closes, volumes).items()}
    return _combined(stacked, window, np.ascontiguousarray(closes[:, -tail:]))


def frame_arrays(bars: pd.DataFrame | Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    """The OHLCV columns of a frame as contiguous float64 arrays."""
    return {c: np.ascontiguousarray(bars[c], dtype=np.float64) for c in OHLCV_COLUMNS}


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Features of a candle frame (see module docstring for the columns).

    Input: indexed by UTC bar open time, float columns `open, high, low, close, volume`
    (finite; a NaN inside the series propagates through the recursive indicators).
    Output: FEATURE_COLUMNS as float64, same index and length; warm-up rows are NaN.
    """
    cols = frame_arrays(bars)
    feats = feature_arrays(cols["high"], cols["low"], cols["close"], cols["volume"])
    return pd.DataFrame(dict(feats), index=bars.index, columns=list(FEATURE_COLUMNS))
