"""Features agree with TA-Lib, have the documented warm-up, and never look ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from signalengine.tasks.engine.features import (
    FEATURE_COLUMNS,
    FEATURE_WARMUP_BARS,
    WINDOW_LOOKBACK_BARS,
    compute_features,
    feature_arrays,
    feature_tails,
)
from tests.utils.bars import make_bars_1m
from tests.utils.real_data import real_files

WARM = 400  # rows skipped before comparing recursive indicators with TA-Lib's seeding
# Rows per column that are NaN before the first value (finite input).
LOOKBACK = {
    "ema_12": 11,
    "ema_26": 25,
    "ema_slope": 12,
    "ema_spread_pct": 25,
    "rsi_14": 14,
    "atr_14": 14,
    "atr_pct": 14,
    "macd": 25,
    "macd_signal": 33,
    "macd_hist": 33,
    "bb_upper": 19,
    "bb_middle": 19,
    "bb_lower": 19,
    "bb_pctb": 19,
    "bb_width_pct": 19,
    "volume_z": 20,
    "ret_1": 1,
    "ret_5": 5,
    "ret_20": 20,
    "rv_20": 20,
}


def _assert_talib_agreement(bars: pd.DataFrame) -> None:
    f = compute_features(bars)
    h, lo, c, v = (bars[k].to_numpy() for k in ("high", "low", "close", "volume"))
    scale = float(np.median(c))

    def close(ours: str, ref: np.ndarray, *, atol: float = 0.0) -> None:
        np.testing.assert_allclose(f[ours].to_numpy()[WARM:], ref[WARM:], rtol=1e-6, atol=atol)

    close("ema_12", talib.EMA(c, 12))
    close("ema_26", talib.EMA(c, 26))
    close("rsi_14", talib.RSI(c, 14))
    close("atr_14", talib.ATR(h, lo, c, 14))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    close("macd", macd, atol=1e-9 * scale)
    close("macd_signal", signal, atol=1e-9 * scale)
    close("macd_hist", hist, atol=1e-9 * scale)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    close("bb_upper", upper)
    close("bb_middle", middle)
    close("bb_lower", lower)
    ema12 = talib.EMA(c, 12)
    close("ema_slope", (ema12 / np.r_[np.nan, ema12[:-1]] - 1) * 100, atol=1e-12)
    vol = pd.Series(v)
    prev_mean = vol.rolling(20).mean().shift(1)
    prev_std = vol.rolling(20).std(ddof=0).shift(1)
    close("volume_z", ((vol - prev_mean) / prev_std).to_numpy(), atol=1e-9)
    logret = np.log(pd.Series(c)).diff()
    close("ret_5", np.log(pd.Series(c)).diff(5).to_numpy(), atol=1e-12)
    close("rv_20", (logret.rolling(20).std(ddof=0) * 100).to_numpy(), atol=1e-9)


def test_agrees_with_talib_on_a_long_series() -> None:
    _assert_talib_agreement(make_bars_1m(days=5, seed=11))


def test_agrees_with_talib_on_real_candles() -> None:
    (path,) = real_files("ft_btc-usdt_5m_2023-01.parquet")
    bars = pd.read_parquet(path).set_index("ts")
    _assert_talib_agreement(bars)


@pytest.mark.parametrize("seed", [1, 2])
def test_trailing_window_is_bit_identical_to_full_history(seed: int) -> None:
    """The live engine's 1000-bar window reproduces the backtest's last row exactly."""
    bars = make_bars_1m(days=3, seed=seed)
    h, lo, c, v = (bars[k].to_numpy() for k in ("high", "low", "close", "volume"))
    full = feature_arrays(h, lo, c, v)
    for end in range(1100, len(c), 211):
        win = feature_arrays(
            h[end - 1000 : end], lo[end - 1000 : end], c[end - 1000 : end], v[end - 1000 : end]
        )
        for col in FEATURE_COLUMNS:
            assert win[col][-1] == full[col][end - 1], (col, end)


def test_feature_tails_are_the_last_rows_bit_for_bit() -> None:
    """Stacked tails (the live batch) == the last rows of each series' full features."""
    tail = 6
    lengths = [tail + WINDOW_LOOKBACK_BARS, 40, 1000, 333]
    series: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for seed, n in enumerate(lengths):
        bars = make_bars_1m(minutes=n, seed=20 + seed)
        h, lo, c, v = (bars[k].to_numpy() for k in ("high", "low", "close", "volume"))
        series.append((h, lo, c, v))
    stacked = feature_tails(series, tail=tail)
    assert list(stacked) == list(FEATURE_COLUMNS)
    for k, cols in enumerate(series):
        full = feature_arrays(*cols)
        for col in FEATURE_COLUMNS:
            assert stacked[col].shape == (len(series), tail)
            np.testing.assert_array_equal(stacked[col][k], full[col][-tail:], err_msg=col)
    with pytest.raises(ValueError, match="at least"):
        h, lo, c, v = (a[-tail - WINDOW_LOOKBACK_BARS + 1 :] for a in series[0])
        feature_tails([(h, lo, c, v)], tail=tail)
    assert feature_tails([], tail=tail)["rsi_14"].shape == (0, tail)


def test_no_lookahead() -> None:
    bars = make_bars_1m(days=1, seed=3)
    base = compute_features(bars)
    changed = bars.copy()
    changed.iloc[700:] *= 1.3
    after = compute_features(changed)
    pd.testing.assert_frame_equal(base.iloc[:700], after.iloc[:700])
    assert not base.iloc[700:].equals(after.iloc[700:])


def _walk(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(min_value=0, max_value=90))
    steps = draw(st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n))
    flat = draw(st.booleans())
    close = 100.0 * np.exp(np.cumsum(np.asarray(steps, dtype=np.float64) * (0 if flat else 1)))
    open_ = np.r_[close[:1], close[:-1]]
    vols = draw(st.lists(st.floats(0.0, 1e6), min_size=n, max_size=n))
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC", name="ts")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": np.asarray(vols, dtype=np.float64),
        },
        index=ts,
    )


@settings(max_examples=60, deadline=None)
@given(st.composite(_walk)())
def test_shapes_warmup_and_ranges(bars: pd.DataFrame) -> None:
    f = compute_features(bars)
    assert list(f.columns) == list(FEATURE_COLUMNS)
    assert f.index.equals(bars.index)
    assert all(dtype == np.float64 for dtype in f.dtypes)
    assert max(LOOKBACK.values()) == FEATURE_WARMUP_BARS
    for col, k in LOOKBACK.items():
        values = f[col].to_numpy()
        assert np.isnan(values[:k]).all(), col
        assert np.isfinite(values[k:]).all(), col
    ok = f.dropna()
    assert ((ok["rsi_14"] >= 0) & (ok["rsi_14"] <= 100)).all()
    assert (ok["atr_14"] >= 0).all()
    assert (ok["bb_upper"] >= ok["bb_middle"] - 1e-9).all()
    assert (ok["bb_middle"] >= ok["bb_lower"] - 1e-9).all()


def test_nan_inside_the_series_keeps_the_shape() -> None:
    bars = make_bars_1m(minutes=200, seed=4)
    bars.iloc[120, bars.columns.get_loc("close")] = np.nan
    f = compute_features(bars)
    assert f.shape == (200, len(FEATURE_COLUMNS))
    assert np.isfinite(f["bb_middle"].to_numpy()[60:120]).all()
    assert np.isnan(f["bb_middle"].to_numpy()[120:140]).all()
    assert np.isfinite(f["bb_middle"].to_numpy()[140:]).all()
