"""Settlement on hand-built 1m sequences (DESIGN §4), and vectorized == reference walk."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from signalengine.tasks.outcomes.settlement import (
    OUTCOMES,
    PERFORMANCE_COLUMNS,
    settle_arrays,
    settle_signal,
    settle_signals,
)
from tests.utils.bars import make_bars_1m

T0 = pd.Timestamp("2024-01-01 00:05", tz="UTC")  # emitted_at
MIN = pd.Timedelta("1min")


def _bars(rows: list[tuple[float, float, float, float]], start: pd.Timestamp = T0) -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(rows), freq="1min", tz="UTC", name="ts")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=ts, dtype=float)
    frame["volume"] = 1.0
    return frame


def _signal(direction: str = "long", **kw: Any) -> dict[str, Any]:
    tp, sl = (110.0, 95.0) if direction == "long" else (90.0, 105.0)
    sig = {
        "id": "s1",
        "run_id": "r",
        "exchange": "e",
        "symbol": "X",
        "timeframe": "5m",
        "score": 0.7,
        "direction": direction,
        "entry_price": 100.0,
        "take_profit": tp,
        "stop_loss": sl,
        "emitted_at": T0,
        "expires_at": T0 + 10 * MIN,
    }
    sig.update(kw)
    return sig


def _both(sig: dict[str, Any], bars: pd.DataFrame, **kw: Any) -> Any:
    """Scalar result, after checking that the vectorized path agrees with it."""
    ref = settle_signal(sig, bars, **kw)
    perf = settle_signals(pd.DataFrame([sig]), bars, **kw)
    assert list(perf.columns) == list(PERFORMANCE_COLUMNS)
    if ref is None:
        assert perf.empty
    else:
        row = perf.iloc[0]
        assert (row.outcome, row.exit_price, row.exit_time) == (
            ref.outcome,
            ref.exit_price,
            ref.exit_time,
        )
        assert row.return_pct == pytest.approx(ref.return_pct, abs=1e-12)
        assert row.duration_sec == ref.duration_sec
        assert row.entry_time == sig["emitted_at"]
    return ref


def test_long_gap_through_stop_exits_at_open() -> None:
    s = _both(_signal(), _bars([(101, 102, 99, 100), (93, 94, 90, 92)]))
    assert (s.outcome, s.exit_price) == ("sl_hit", 93.0)
    assert s.exit_time == T0 + 2 * MIN
    assert s.return_pct == pytest.approx(-7.0)
    assert s.duration_sec == 120.0


def test_long_gap_through_target_exits_at_open() -> None:
    s = _both(_signal(), _bars([(101, 102, 99, 100), (112, 115, 111, 113)]))
    assert (s.outcome, s.exit_price) == ("tp_hit", 112.0)


def test_stop_checked_first_when_both_touched() -> None:
    s = _both(_signal(), _bars([(100, 111, 94, 100)]))
    assert (s.outcome, s.exit_price, s.exit_time) == ("sl_hit", 95.0, T0 + MIN)


def test_target_touched_exits_at_target() -> None:
    s = _both(_signal(), _bars([(100, 104, 99, 103), (103, 110.5, 102, 108)]))
    assert (s.outcome, s.exit_price) == ("tp_hit", 110.0)
    assert s.return_pct == pytest.approx(10.0)


def test_expiry_exits_at_last_close_by_expires_at() -> None:
    rows = [(100 + i / 10, 101 + i / 10, 99 + i / 10, 100.5 + i / 10) for i in range(12)]
    s = _both(_signal(), _bars(rows))
    assert s.outcome == "expired"
    assert s.exit_time == T0 + 10 * MIN  # the 10th bar closes exactly at expires_at
    assert s.exit_price == pytest.approx(100.5 + 0.9)


def test_expiry_with_a_gap_uses_the_last_bar_closed_by_then() -> None:
    bars = _bars([(100 + i, 101 + i, 99 + i, 100.5 + i) for i in range(5)]).iloc[[0, 1, 2]]
    later = _bars([(104, 105, 103, 104)], start=T0 + 20 * MIN)
    s = _both(_signal(take_profit=200.0), pd.concat([bars, later]))
    assert (s.outcome, s.exit_price, s.exit_time) == ("expired", 102.5, T0 + 3 * MIN)


def test_short_is_the_mirror() -> None:
    s = _both(_signal("short"), _bars([(100, 106, 89, 100)]))
    assert (s.outcome, s.exit_price) == ("sl_hit", 105.0)  # stop first when both touched
    s = _both(_signal("short"), _bars([(99, 100, 95, 96), (88, 89, 85, 86)]))
    assert (s.outcome, s.exit_price) == ("tp_hit", 88.0)
    assert s.return_pct == pytest.approx(12.0)
    s = _both(_signal("short"), _bars([(107, 108, 106, 107)]))
    assert (s.outcome, s.exit_price, s.return_pct) == ("sl_hit", 107.0, pytest.approx(-7.0))
    s = _both(_signal("short"), _bars([(99, 100, 89.5, 95)]))
    assert (s.outcome, s.exit_price) == ("tp_hit", 90.0)


def test_fees_and_slippage_are_subtracted_in_percent() -> None:
    s = _both(_signal(), _bars([(100, 110, 99, 109)]), fee_bps=10.0, slippage_bps=5.0)
    assert s.return_pct == pytest.approx(10.0 - 0.15)


def test_bars_before_emitted_at_are_ignored() -> None:
    before = _bars([(100, 101, 80, 100)] * 5, start=T0 - 5 * MIN)
    after = _bars([(100, 111, 99, 100)])
    s = _both(_signal(), pd.concat([before, after]))
    assert (s.outcome, s.exit_time) == ("tp_hit", T0 + MIN)


def test_not_settleable_before_expiry_without_a_hit() -> None:
    bars = _bars([(100, 101, 99, 100)] * 4)
    assert _both(_signal(), bars) is None
    assert _both(_signal(), bars, as_of=T0 + 9 * MIN) is None
    s = _both(_signal(), bars, as_of=T0 + 10 * MIN)  # expiry reached; no more bars came
    assert (s.outcome, s.exit_time) == ("expired", T0 + 4 * MIN)
    s = _both(_signal(), bars.iloc[:0], as_of=T0 + 11 * MIN)
    assert (s.outcome, s.exit_price, s.exit_time) == ("expired", 100.0, T0)


def test_vectorized_matches_reference_walk_on_random_signals() -> None:
    bars = make_bars_1m(days=2, seed=9, gap_fraction=0.05)
    rng = np.random.default_rng(1)
    n = 400
    emitted = bars.index[rng.integers(0, len(bars) - 10, n)].floor("5min")
    side = rng.choice([1, -1], n).astype(np.int8)
    entry = bars["close"].to_numpy()[rng.integers(0, len(bars), n)]
    atr = entry * rng.uniform(0.001, 0.01, n)
    signals = pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(n)],
            "run_id": "r",
            "exchange": "e",
            "symbol": "X",
            "timeframe": "5m",
            "score": 0.5,
            "direction": np.where(side > 0, "long", "short"),
            "entry_price": entry,
            "take_profit": entry + side * 2 * atr,
            "stop_loss": entry - side * atr,
            "emitted_at": emitted,
            "expires_at": emitted + pd.Timedelta("1h"),
        }
    )
    as_of = bars.index[-1] - pd.Timedelta("30min")
    perf = settle_signals(signals, bars, fee_bps=10, as_of=as_of).set_index("signal_id")
    settled = 0
    for sig in signals.to_dict("records"):
        ref = settle_signal(sig, bars, fee_bps=10, as_of=as_of)
        if ref is None:
            assert sig["id"] not in perf.index
            continue
        settled += 1
        row = perf.loc[sig["id"]]
        assert (row.outcome, row.exit_price, row.exit_time) == (
            ref.outcome,
            ref.exit_price,
            ref.exit_time,
        )
        assert row.return_pct == pytest.approx(ref.return_pct, abs=1e-12)
    assert settled > 300
    assert set(perf["outcome"]) == {"tp_hit", "sl_hit", "expired"}


def test_settle_arrays_empty_inputs() -> None:
    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0)
    res = settle_arrays(
        {"ts": empty_i, "open": empty_f, "high": empty_f, "low": empty_f, "close": empty_f},
        side=np.zeros(0, dtype=np.int8),
        entry=empty_f,
        take_profit=empty_f,
        stop_loss=empty_f,
        emitted_ns=empty_i,
        expires_ns=empty_i,
        as_of_ns=0,
        cost_pct=0.0,
    )
    assert res.outcome.size == 0
    assert OUTCOMES[0] == "open"
