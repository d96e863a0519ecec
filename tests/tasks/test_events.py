"""Event detectors on hand-built bars, and how scoring and the cooldown combine them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from signalengine.tasks.engine.buckets import resample_bars
from signalengine.tasks.engine.events import (
    EVENT_TYPES,
    VOLUME_SPIKE_Z,
    EventSeries,
    bb_breakout,
    detect_events,
    ema_cross,
    macd_cross,
    rsi_reversal,
    trend_pullback,
    volume_spike,
)
from signalengine.tasks.engine.features import compute_features
from signalengine.tasks.engine.scoring import (
    EVENT_WEIGHTS,
    SCORE_SATURATION,
    cooldown_mask,
    score_events,
)
from tests.utils.bars import make_bars_1m


def _frame(**cols: list[float]) -> dict[str, np.ndarray]:
    n = len(next(iter(cols.values())))
    out = {"atr_14": np.ones(n)}
    out.update({k: np.asarray(v, dtype=np.float64) for k, v in cols.items()})
    return out


def _dirs(event: EventSeries) -> list[int]:
    return [int(d) for d in event.direction]


def test_ema_cross() -> None:
    e = ema_cross(_frame(ema_12=[9.0, 10.5, 11.0, 9.0], ema_26=[10.0, 10.0, 10.0, 10.0]))
    assert _dirs(e) == [0, 1, 0, -1]
    assert 0.5 <= e.strength[1] <= 1.0 and e.strength[0] == 0.0


def test_macd_cross() -> None:
    e = macd_cross(_frame(macd_hist=[np.nan, -0.2, 0.01, 0.3, -0.1], atr_14=[10.0] * 5))
    assert _dirs(e) == [0, 0, 1, 0, -1]
    assert e.strength[2] < e.strength[4]  # a faster turn is stronger


def test_rsi_reversal_leaves_extremes() -> None:
    e = rsi_reversal(_frame(rsi_14=[40, 25, 31, 50, 75, 69, 72, 71]))
    assert _dirs(e) == [0, 0, 1, 0, 0, -1, 0, 0]
    deep = rsi_reversal(_frame(rsi_14=[40, 12, 31]))
    assert deep.strength[2] > e.strength[2]


def test_bb_breakout() -> None:
    e = bb_breakout(
        _frame(
            close=[100.0, 104.0, 105.0, 95.0, 94.0],
            bb_upper=[103.0, 103.0, 103.0, 103.0, 103.0],
            bb_lower=[97.0, 97.0, 97.0, 97.0, 97.0],
        )
    )
    assert _dirs(e) == [0, 1, 0, -1, 0]


def test_volume_spike_follows_the_bar_body() -> None:
    z = VOLUME_SPIKE_Z + 0.5
    e = volume_spike(
        _frame(
            volume_z=[z, z, z, 1.0],
            open=[10.0, 11.0, 10.0, 10.0],
            close=[11.0, 10.0, 10.0, 12.0],
        )
    )
    assert _dirs(e) == [1, -1, 0, 0]


def test_trend_pullback() -> None:
    e = trend_pullback(
        _frame(
            ema_12=[10.0, 10.1, 9.9, 9.8],
            ema_26=[9.0, 9.1, 10.5, 10.6],
            ema_slope=[0.1, 0.1, -0.1, -0.1],
            close=[9.9, 10.3, 10.0, 9.7],
        )
    )
    assert _dirs(e) == [0, 1, 0, -1]


def test_nan_rows_never_fire_and_strengths_are_bounded() -> None:
    bars = resample_bars(make_bars_1m(days=4, seed=2), "5m")
    frame = {**{c: bars[c].to_numpy() for c in bars}, **compute_features(bars).to_dict("series")}
    events = detect_events({k: np.asarray(v, dtype=np.float64) for k, v in frame.items()})
    assert tuple(events) == EVENT_TYPES
    for name, e in events.items():
        assert e.direction.shape == e.strength.shape == (len(bars),)
        assert not e.direction[:12].any(), name  # every detector reads a warm-up NaN there
        assert ((e.strength >= 0) & (e.strength <= 1)).all(), name
        assert (e.strength[e.direction == 0] == 0).all(), name
        assert (e.strength[e.direction != 0] >= 0.5).all(), name
        assert e.direction.any(), name


def _event(direction: list[int], strength: list[float]) -> EventSeries:
    return EventSeries(np.asarray(direction, np.int8), np.asarray(strength, np.float64))


def test_score_combines_and_cancels() -> None:
    events = {
        "ema_cross": _event([1, 1, 1, 0], [1.0, 1.0, 0.5, 0.0]),
        "rsi_reversal": _event([-1, 1, 0, 0], [1.0, 1.0, 0.0, 0.0]),
    }
    direction, score = score_events(events)
    assert direction.tolist() == [0, 1, 1, 0]
    assert score[0] == 0.0 and score[3] == 0.0
    assert score[1] == pytest.approx(2.0 / SCORE_SATURATION)
    assert score[2] == pytest.approx(0.5 * EVENT_WEIGHTS["ema_cross"] / SCORE_SATURATION)
    everything = {k: _event([-1], [1.0]) for k in EVENT_WEIGHTS}
    assert score_events(everything)[1].tolist() == [1.0]


def test_cooldown_blocks_the_next_bars_and_carries_state() -> None:
    five = 300 * 10**9
    ts = np.array([0, 1, 2, 3, 4, 8], dtype=np.int64) * five
    side = np.array([1, -1, 1, 1, 1, 1], dtype=np.int8)
    keep = cooldown_mask(ts, side, cooldown_ns=3 * five, last_emitted={})
    assert keep.tolist() == [True, True, False, False, True, True]
    state: dict[int, int] = {}
    first = cooldown_mask(ts[:3], side[:3], cooldown_ns=3 * five, last_emitted=state)
    rest = cooldown_mask(ts[3:], side[3:], cooldown_ns=3 * five, last_emitted=state)
    assert np.r_[first, rest].tolist() == keep.tolist()
    assert state == {1: 8 * five, -1: 1 * five}
    no_cooldown = cooldown_mask(ts, side, cooldown_ns=0, last_emitted={})
    assert no_cooldown.all()


def test_detectors_accept_dataframes() -> None:
    frame = pd.DataFrame({"ema_12": [1.0, 3.0], "ema_26": [2.0, 2.0], "atr_14": [1.0, 1.0]})
    assert _dirs(ema_cross(frame)) == [0, 1]


def test_detectors_and_score_on_stacked_series_equal_one_by_one() -> None:
    """2-D input (one series per row, as the live batch stacks them) == each row alone."""
    rows: list[dict[str, np.ndarray]] = []
    for seed in (1, 2, 3):
        bars = resample_bars(make_bars_1m(days=1, seed=seed), "5m")
        feats = compute_features(bars)
        rows.append({str(c): bars[c].to_numpy(dtype=np.float64) for c in ("open", "close")})
        rows[-1].update({str(c): feats[c].to_numpy(dtype=np.float64) for c in feats.columns})
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    events = detect_events(stacked)
    side, score = score_events(events)
    for i, row in enumerate(rows):
        alone = detect_events(row)
        for name in EVENT_TYPES:
            np.testing.assert_array_equal(events[name].direction[i], alone[name].direction)
            np.testing.assert_array_equal(events[name].strength[i], alone[name].strength)
        alone_side, alone_score = score_events(alone)
        np.testing.assert_array_equal(side[i], alone_side)
        np.testing.assert_array_equal(score[i], alone_score)
    assert side.any()
