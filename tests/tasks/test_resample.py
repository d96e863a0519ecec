"""Resampling 1m candles into timeframe buckets, and which buckets are closed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from signalengine.tasks.engine.buckets import (
    ClosedSeries,
    closed_bars,
    index_ns,
    resample_bars,
    resample_closed,
)
from tests.utils.bars import make_bars_1m


@pytest.mark.parametrize("timeframe", ["1m", "5m", "15m", "1h", "4h"])
def test_matches_pandas_resample_with_gaps(timeframe: str) -> None:
    bars = make_bars_1m(days=2, seed=5, gap_fraction=0.2)
    ours = resample_bars(bars, timeframe)
    rule = timeframe.replace("m", "min") if timeframe.endswith("m") else timeframe
    agg = bars.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    agg["bars"] = bars["close"].resample(rule, label="left", closed="left").count()
    agg = agg[agg["bars"] > 0]
    assert ours.index.equals(agg.index.as_unit("ns"))
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(ours[col].to_numpy(), agg[col].to_numpy())
    np.testing.assert_allclose(ours["volume"].to_numpy(), agg["volume"].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(ours["bars"].to_numpy(), agg["bars"].to_numpy())


def test_accepts_any_datetime_unit_and_rejects_unsorted() -> None:
    bars = make_bars_1m(minutes=30)
    ms = bars.set_axis(bars.index.as_unit("ms"))
    pd.testing.assert_frame_equal(resample_bars(ms, "5m"), resample_bars(bars, "5m"))
    with pytest.raises(ValueError, match="increasing"):
        resample_bars(bars.iloc[::-1], "5m")
    with pytest.raises(ValueError, match="unknown timeframe"):
        resample_bars(bars, "7m")
    assert resample_bars(bars.iloc[:0], "5m").empty


def test_only_closed_buckets() -> None:
    bars = make_bars_1m(minutes=180, start="2024-01-01")
    mid = pd.Timestamp("2024-01-01 01:37", tz="UTC")
    hourly = resample_closed(bars, "1h", mid)
    assert list(hourly.index) == [pd.Timestamp("2024-01-01 00:00", tz="UTC")]
    at_end = resample_closed(bars, "1h", pd.Timestamp("2024-01-01 02:00", tz="UTC"))
    assert len(at_end) == 2 and at_end["bars"].iloc[-1] == 60
    five = resample_closed(bars, "5m", mid)
    assert five.index[-1] == pd.Timestamp("2024-01-01 01:30", tz="UTC")
    # The 01:35 bucket is still filling at 01:37 (its 1m bars up to 01:36 have closed).
    full = resample_bars(bars, "5m")
    assert len(closed_bars(full, "5m", mid)) == len(five)
    assert closed_bars(full, "5m", mid + pd.Timedelta("3min")).index[-1] == mid - pd.Timedelta(
        "2min"
    )


def test_closed_series_selects_closed_rows_of_the_window() -> None:
    bars = make_bars_1m(minutes=180, start="2024-01-01")
    mid = pd.Timestamp("2024-01-01 01:37", tz="UTC")
    five = ClosedSeries(bars, "5m", as_of_ns=mid.value, window=4, resample=True)
    expected = resample_closed(bars, "5m", mid).iloc[-4:]
    np.testing.assert_array_equal(five.ts, index_ns(expected))
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(five.cols[col], expected[col].to_numpy())
        assert five.cols[col].flags["C_CONTIGUOUS"]
    everything = ClosedSeries(bars, "1m", as_of_ns=None, window=None)
    np.testing.assert_array_equal(everything.cols["close"], bars["close"].to_numpy())
    none_yet = ClosedSeries(bars, "1h", as_of_ns=bars.index[0].value, window=10, resample=True)
    assert none_yet.ts.size == 0 and none_yet.cols["close"].size == 0


@pytest.mark.parametrize(
    ("step_min", "width_min", "skip", "take"),
    [(1, 5, 0, 3000), (1, 5, 3, 2999), (5, 15, 7, 901), (15, 60, 1, 402), (1, 4, 2, 10)],
)
def test_regular_fast_path_equals_the_general_one_bit_for_bit(
    step_min: int, width_min: int, skip: int, take: int
) -> None:
    from signalengine.tasks.engine import buckets

    rng = np.random.default_rng(step_min * 100 + skip)
    step = step_min * 60_000_000_000
    ts = 1_704_067_200_000_000_000 + np.arange(skip, skip + take, dtype=np.int64) * step
    level = {"ts": ts, **{c: rng.random(take) * 1e3 for c in ("open", "high", "low", "close")}}
    level["volume"] = rng.random(take) * rng.choice([1e-3, 1.0, 1e6], size=take)
    if step_min > 1:
        level["bars"] = rng.integers(1, step_min + 1, size=take)
    fast = buckets._aggregate_regular(level, width_min * 60_000_000_000)
    slow = buckets._aggregate_segments(level, width_min * 60_000_000_000)
    assert fast is not None and set(fast) == set(slow)
    for key in slow:
        assert fast[key].dtype == slow[key].dtype
        np.testing.assert_array_equal(fast[key], slow[key])


def test_series_with_a_gap_or_off_grid_take_the_general_path() -> None:
    from signalengine.tasks.engine import buckets

    ts = np.arange(100, dtype=np.int64) * 60_000_000_000
    values = {c: np.ones(100) for c in ("open", "high", "low", "close", "volume")}
    gap = np.delete(ts, 50)
    assert (
        buckets._aggregate_regular(
            {"ts": gap, **{c: v[:99] for c, v in values.items()}}, 5 * 60_000_000_000
        )
        is None
    )
    assert buckets._aggregate_regular({"ts": ts + 1, **values}, 5 * 60_000_000_000) is None
    assert buckets._aggregate_regular({"ts": ts, **values}, 15 * 60_000_000_000) is None  # k > 8
