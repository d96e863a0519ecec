"""The in-memory backtest's fast paths equal the general ones, bit for bit, on adversarial input.

Each shortcut of the speed pass (issue 13) against the plain computation it replaces:
feature columns formed at the rows read, sparse event convictions, the regular bucket
fold, column-wise reads of long frames, the numpy orderings of the backtest's frames and
of the trade statistics, and the performance frame's text columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from signalengine.tasks.engine import buckets
from signalengine.tasks.engine.buckets import ClosedSeries
from signalengine.tasks.engine.events import DETECTORS, rsi_reversal
from signalengine.tasks.engine.features import (
    FEATURE_COLUMNS,
    ROW_COLUMNS,
    ema_slope,
    feature_arrays,
    vote_feature_arrays,
)
from signalengine.tasks.engine.shared import Columns, SeriesFeatures, column_at
from signalengine.tasks.outcomes.settlement import performance_frame, settle_frame
from signalengine.tasks.outcomes.stats import exit_order
from signalengine.tasks.runs import backtest as driver
from tests.utils.bars import make_bars_1m


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def _series(rng: np.random.Generator, n: int, kind: int) -> tuple[np.ndarray, ...]:
    """high, low, close, volume with NaN gaps, flat stretches or zero volumes by `kind`."""
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    if kind == 1:
        close[rng.random(n) < 0.05] = np.nan
    if kind == 2:
        close[: n // 2] = 100.0
    high = close * (1 + rng.random(n) * 0.01)
    low = close * (1 - rng.random(n) * 0.01)
    volume = rng.lognormal(0, 2, n)
    if kind == 2:
        volume[: n // 2] = 1.0
    if kind == 3:
        volume[rng.random(n) < 0.3] = 0.0
    return high, low, close, volume


@pytest.mark.parametrize("n", [1, 5, 20, 21, 22, 40, 700])
@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_feature_columns_at_rows_are_the_whole_columns_rows(n: int, kind: int) -> None:
    rng = np.random.default_rng(n * 10 + kind)
    cols = _series(rng, n, kind)
    whole = feature_arrays(*cols)
    every = {name: whole[name] for name in FEATURE_COLUMNS}  # reads the row columns whole
    rows = np.unique(np.r_[rng.integers(0, n, 40), np.arange(min(n, 25))]).astype(np.int64)
    at_rows = feature_arrays(*cols)
    for name in FEATURE_COLUMNS:
        got = at_rows.column_at(name, rows)
        np.testing.assert_array_equal(_bits(got), _bits(every[name][rows]), err_msg=name)
    assert not set(ROW_COLUMNS) & set(at_rows._cols)  # formed at the rows only
    assert list(whole) == list(FEATURE_COLUMNS) and "rv_20" in whole and "x" not in whole


def test_vote_columns_at_rows_and_merged_columns() -> None:
    bars = make_bars_1m(days=2, seed=4)
    close = bars["close"].to_numpy()
    full = vote_feature_arrays(close)
    rows = np.array([0, 1, 2, 50, 51, close.size - 1], dtype=np.int64)
    assert np.array_equal(_bits(ema_slope(full["ema_12"], rows)), _bits(full["ema_slope"][rows]))
    series = ClosedSeries(bars, "1m", as_of_ns=None, window=None)
    feats = SeriesFeatures(series)
    voted = feats.at(rows)
    for name in ("ema_12", "ema_26", "ema_slope", "rsi_14", "close"):
        np.testing.assert_array_equal(_bits(voted[name]), _bits(full.get(name, close)[rows]))
    assert "ema_slope" not in (feats._vote or {})  # formed at the rows read only
    extra = {"close": np.zeros(close.size), "own": np.ones(close.size)}
    merged = Columns(extra, feats)
    assert merged["close"] is extra["close"] and list(merged)[:2] == ["close", "own"]
    np.testing.assert_array_equal(column_at(merged, "ema_slope", rows), voted["ema_slope"])


@pytest.mark.parametrize("seed", range(4))
def test_sparse_event_convictions_stack_and_match_each_series(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    high, low, close, volume = _series(rng, n, seed % 4)
    frame = {"open": np.r_[close[:1], close[:-1]], "high": high, "low": low, "close": close}
    frame |= {"volume": volume, **feature_arrays(high, low, close, volume)}
    frame["atr_14"] = frame["atr_14"] * rng.choice([-1.0, 0.0, 1.0, np.nan], n)
    stacked = {k: np.stack([np.roll(v, s) for s in range(3)]) for k, v in frame.items()}
    for name, detect in DETECTORS.items():
        both = detect(stacked)
        for s in range(3):
            one = detect({k: v[s] for k, v in stacked.items()})
            np.testing.assert_array_equal(both.direction[s], one.direction, err_msg=name)
            np.testing.assert_array_equal(_bits(both.strength[s]), _bits(one.strength), name)
            fired = one.direction != 0
            assert np.all(one.strength[~fired] == 0) and np.all(one.strength[fired] >= 0.5)


def test_rsi_dip_near_the_first_bar_reads_the_bars_there_are() -> None:
    e = rsi_reversal({"rsi_14": np.array([40.0, 25.0, 31.0]), "atr_14": np.ones(3)})
    assert list(e.direction) == [0, 0, 1]
    assert e.strength[2] == 0.5 + 0.5 * ((30.0 - 25.0) / 15.0)


@pytest.mark.parametrize(("step_min", "width_min"), [(1, 5), (1, 2), (5, 15), (15, 60)])
def test_regular_buckets_keep_nan_inf_and_signed_zero_bits(step_min: int, width_min: int) -> None:
    rng = np.random.default_rng(step_min + width_min)
    take, step = 2003, step_min * 60_000_000_000
    ts = 1_704_067_200_000_000_000 + np.arange(3, 3 + take, dtype=np.int64) * step
    level = {"ts": ts, **{c: rng.random(take) * 1e3 for c in ("open", "high", "low", "close")}}
    level["volume"] = rng.random(take) * rng.choice([1e-3, 1.0, 1e6], size=take)
    for c in ("high", "low", "volume"):
        level[c][rng.random(take) < 0.03] = rng.choice([np.nan, -0.0, 0.0, np.inf, -np.inf])
    fast = buckets._aggregate_regular(level, width_min * 60_000_000_000)
    slow = buckets._aggregate_segments(level, width_min * 60_000_000_000)
    assert fast is not None and set(fast) == set(slow)
    for key in slow:
        assert fast[key].dtype == slow[key].dtype
        np.testing.assert_array_equal(_bits(fast[key]), _bits(slow[key]), err_msg=key)


def test_long_frames_are_read_column_by_column_with_the_same_values() -> None:
    bars = make_bars_1m(minutes=buckets._COLUMNWISE_MIN_ROWS + 7, seed=3)
    bars["volume"] = (bars["volume"] * 100).astype(np.int64)  # a second block, not float
    as_of = int(bars.index[-3].value)
    long_cols = ClosedSeries(bars, "1m", as_of_ns=as_of, window=5000).cols
    short = bars.iloc[-5200:]  # a short frame: one block copy
    short_cols = ClosedSeries(short, "1m", as_of_ns=as_of, window=5000).cols
    for name, values in long_cols.items():
        assert values.dtype == np.float64 and values.flags.c_contiguous
        np.testing.assert_array_equal(values, short_cols[name])
        np.testing.assert_array_equal(values, bars[name].to_numpy(dtype=float)[-5003:-3])


def _trades(rng: np.random.Generator, n: int) -> pd.DataFrame:
    minutes = rng.integers(0, n // 3 + 1, n)  # many shared exit minutes
    return pd.DataFrame(
        {
            "signal_id": [f"id{rng.integers(0, n // 2 + 1):04d}" for _ in range(n)],
            "exit_time": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(minutes, "min"),
            "return_pct": rng.normal(0, 1, n),
        },
        index=rng.permutation(n) + 10,
    )


@pytest.mark.parametrize("seed", range(5))
def test_exit_order_equals_pandas_multi_key_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    trades = _trades(rng, 200)
    variants = [
        trades,
        trades.astype({"signal_id": object}),
        trades.astype({"exit_time": "datetime64[us, UTC]"}),
        trades.drop(columns="signal_id"),
        trades.assign(exit_time=trades["exit_time"].where(rng.random(200) > 0.1)),  # NaT
        trades.assign(signal_id=trades["signal_id"].where(rng.random(200) > 0.1)),  # NaN ids
    ]
    for frame in variants:
        keys = ["exit_time", "signal_id"] if "signal_id" in frame else ["exit_time"]
        pd.testing.assert_frame_equal(
            exit_order(frame), frame.sort_values(keys, kind="stable"), check_exact=True
        )


def test_backtest_concat_equals_concat_and_sort_values() -> None:
    rng = np.random.default_rng(7)
    times = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 9, 60), "h")
    frames = []
    for k, symbol in enumerate(["C/USDT", "A/USDT", "B/USDT", "A2/USDT"]):
        part = slice(15 * k, 15 * (k + 1))
        frames.append(
            (symbol, pd.DataFrame({"symbol": symbol, "t": times[part], "x": rng.random(15)}))
        )
    got = driver._concat(frames, ("symbol", "t", "x"), "t")
    plain = pd.concat([f for _, f in frames], ignore_index=True)
    expected = plain.sort_values(["t", "symbol"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    one = [("A/USDT", frames[1][1].sort_values("t", kind="stable").reset_index(drop=True))]
    pd.testing.assert_frame_equal(driver._concat(one, (), "t"), one[0][1], check_exact=True)


def test_performance_text_columns_are_what_pandas_infers() -> None:
    bars = make_bars_1m(days=1, seed=9)
    t0 = bars.index[100]
    signals = pd.DataFrame(
        {
            "id": ["a", "b"],
            "run_id": "r",
            "exchange": "e",
            "symbol": "X",
            "timeframe": "5m",
            "score": 0.5,
            "direction": ["long", "short"],
            "entry_price": bars["close"].iloc[100],
            "take_profit": [1e9, 0.0],
            "stop_loss": [0.0, 1e9],
            "emitted_at": [t0, t0],
            "expires_at": [t0 + pd.Timedelta("1h"), bars.index[-1] + pd.Timedelta("1h")],
        }
    )
    for frame in (signals, signals.astype({"id": object, "symbol": object})):
        settled = settle_frame(frame, bars)
        perf = performance_frame(frame, settled)
        rebuilt = pd.DataFrame({c: perf[c].to_numpy() for c in perf.columns})
        assert perf.dtypes.to_dict() == rebuilt.dtypes.to_dict()  # str, as inferred
        assert list(perf["signal_id"]) == ["a"]  # "b" expires after the last bar
        nothing = performance_frame(frame, settled, np.zeros(0, dtype=np.int64))
        assert nothing["signal_id"].dtype == object  # no rows: pandas infers object
