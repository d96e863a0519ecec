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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import talib

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

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_WARMUP_BARS",
    "VOTE_COLUMNS",
    "WINDOW_LOOKBACK_BARS",
    "compute_features",
    "feature_arrays",
    "feature_tails",
    "frame_arrays",
    "rolling_mean_std",
    "vote_feature_arrays",
]


def _nan(shape: int | tuple[int, ...]) -> FloatArray:
    return np.full(shape, np.nan)


def rolling_mean_std(x: FloatArray, period: int) -> tuple[FloatArray, FloatArray]:
    """Trailing `period`-bar mean and population std along the last axis (bars).

    `x` is one series (1-D) or a stack of series (2-D, one per row). Each value depends
    on its window only: sums are accumulated column by column in a fixed order
    (elementwise adds), so the result never depends on where the array starts, on
    memory alignment or on how many series are stacked.
    """
    n = x.shape[-1]
    mean, std = _nan(x.shape), _nan(x.shape)
    if n < period:
        return mean, std
    k = n - period + 1
    total = x[..., 0:k].copy()
    for j in range(1, period):
        total += x[..., j : j + k]
    m = total / period
    dev = x[..., 0:k] - m
    sq = dev * dev
    for j in range(1, period):
        dev = x[..., j : j + k] - m
        sq += dev * dev
    mean[..., period - 1 :] = m
    std[..., period - 1 :] = np.sqrt(sq / period)
    return mean, std


def _log_return(close: FloatArray, lag: int) -> FloatArray:
    out = _nan(close.shape)
    if close.shape[-1] > lag:
        out[..., lag:] = np.log(close[..., lag:] / close[..., :-lag])
    return out


def _ema(x: FloatArray, period: int) -> FloatArray:
    if np.count_nonzero(~np.isnan(x)) < period:
        return _nan(x.size)
    return np.asarray(talib.EMA(x, timeperiod=period), dtype=np.float64)


def vote_feature_arrays(close: FloatArray) -> dict[str, FloatArray]:
    """`ema_12, ema_26, ema_slope, rsi_14` only: what an MTF vote reads (cheap)."""
    close = np.ascontiguousarray(close, dtype=np.float64)
    n = close.size
    ema_12 = _ema(close, 12)
    ema_26 = _ema(close, 26)
    slope = _nan(n)
    if n > 1:
        slope[1:] = (ema_12[1:] / ema_12[:-1] - 1.0) * 100.0
    rsi = np.asarray(talib.RSI(close, timeperiod=14), dtype=np.float64) if n > 14 else _nan(n)
    return {"ema_12": ema_12, "ema_26": ema_26, "ema_slope": slope, "rsi_14": rsi}


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
    present = n - np.count_nonzero(np.isnan(close))  # `_ema`'s rule, counted once
    ema_12 = talib.EMA(close, timeperiod=12) if present >= 12 else _nan(n)
    ema_26 = talib.EMA(close, timeperiod=26) if present >= 26 else _nan(n)
    macd = ema_12 - ema_26
    signal = _ema(macd, 9)
    e = ema_12[-tail - 1 :]
    out["ema_12"][row], out["ema_26"][row] = e[1:], ema_26[-tail:]
    out["ema_slope"][row] = (e[1:] / e[:-1] - 1.0) * 100.0
    out["rsi_14"][row] = talib.RSI(close, timeperiod=14)[-tail:] if n > 14 else np.nan
    out["atr_14"][row] = talib.ATR(high, low, close, timeperiod=14)[-tail:] if n > 14 else np.nan
    m, sg = macd[-tail:], signal[-tail:]
    out["macd"][row], out["macd_signal"][row], out["macd_hist"][row] = m, sg, m - sg


def _window_arrays(close: FloatArray, volume: FloatArray) -> dict[str, FloatArray]:
    """The window-local columns (last axis = bars; 1-D or stacked 2-D): bands, volume_z,
    returns, rv_20. Row i reads rows i - WINDOW_LOOKBACK_BARS .. i only."""
    n = close.shape[-1]
    out: dict[str, FloatArray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        mid, sd = rolling_mean_std(close, BB_PERIOD)
        out["bb_upper"], out["bb_middle"] = mid + BB_DEVIATIONS * sd, mid
        out["bb_lower"] = mid - BB_DEVIATIONS * sd

        vol_mean, vol_sd = rolling_mean_std(volume, VOLUME_PERIOD)
        z = _nan(volume.shape)
        if n > VOLUME_PERIOD:
            prev_mean, prev_sd = vol_mean[..., :-1], vol_sd[..., :-1]
            dev = volume[..., 1:] - prev_mean
            z[..., 1:] = np.where(prev_sd > 0, dev / np.where(prev_sd > 0, prev_sd, 1.0), 0.0)
            z[..., 1:][np.isnan(prev_sd)] = np.nan
        out["volume_z"] = z

        ret_1 = _log_return(close, 1)
        out["ret_1"], out["ret_5"], out["ret_20"] = (
            ret_1,
            _log_return(close, 5),
            _log_return(close, 20),
        )
        rv = _nan(close.shape)
        if n > 1:
            rv[..., 1:] = rolling_mean_std(ret_1[..., 1:], RV_PERIOD)[1] * 100.0
        out["rv_20"] = rv
    return out


def _combined(
    recursive: dict[str, FloatArray], window: dict[str, FloatArray], close: FloatArray
) -> dict[str, FloatArray]:
    """FEATURE_COLUMNS from the two parts (same shape) plus the elementwise ratios."""
    out = {**recursive, **window}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ema_spread_pct"] = (out["ema_12"] - out["ema_26"]) / close * 100.0
        out["atr_pct"] = out["atr_14"] / close * 100.0
        upper, mid, lower = out["bb_upper"], out["bb_middle"], out["bb_lower"]
        width = upper - lower
        pctb = np.where(width > 0, (close - lower) / np.where(width > 0, width, 1.0), 0.5)
        out["bb_pctb"] = np.where(np.isnan(width), np.nan, pctb)
        out["bb_width_pct"] = width / mid * 100.0
    return {c: out[c] for c in FEATURE_COLUMNS}


def _contiguous(*arrays: FloatArray) -> list[FloatArray]:
    return [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]


def feature_arrays(
    high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray
) -> dict[str, FloatArray]:
    """All FEATURE_COLUMNS for float64 high/low/close/volume arrays of one series."""
    high, low, close, volume = _contiguous(high, low, close, volume)
    return _combined(_recursive_arrays(high, low, close), _window_arrays(close, volume), close)


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
    return pd.DataFrame(feats, index=bars.index, columns=list(FEATURE_COLUMNS))
