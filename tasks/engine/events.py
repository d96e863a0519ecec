"""Event detectors: per-bar direction (+1 long, -1 short, 0 none) and strength in [0, 1].

Each detector reads a frame-like mapping of one series' columns (the OHLCV columns plus
`tasks.engine.features` columns) and is vectorized over every bar; the columns may also be 2-D
(one series per row, bars along the last axis), which the live batch uses. A value at bar
i reads bars i and i-1 (i-5 for the RSI dip: EVENT_LOOKBACK_BARS) only. A bare trigger
has strength 0.5; the strength rises to 1 with the conviction measure named per
detector. Warm-up (NaN) bars never fire.

| event          | long (+1) when                                  | strength grows with  |
|----------------|-------------------------------------------------|----------------------|
| ema_cross      | ema_12 crosses above ema_26                     | crossing speed / ATR |
| macd_cross     | macd_hist turns positive (macd over its signal) | change of hist / ATR |
| rsi_reversal   | rsi_14 rises back through 30 (leaves oversold)  | depth of 5-bar dip   |
| bb_breakout    | close crosses above bb_upper                    | excess close / ATR   |
| volume_spike   | volume_z >= VOLUME_SPIKE_Z on an up bar         | volume_z             |
| trend_pullback | uptrend (ema_12 > ema_26, ema_slope > 0) and    | ema spread / ATR     |
|                | close reclaims ema_12 after closing at/below it |                      |

Short (-1) is the mirror image (RSI leaves 70 downwards, close crosses below bb_lower ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray

Frame = Mapping[str, FloatArray] | pd.DataFrame

RSI_OVERSOLD = 30.0
RSI_OVERBOUGHT = 70.0
RSI_DIP_BARS = 5
# Bars before a row that any detector reads (the RSI dip's).
EVENT_LOOKBACK_BARS = RSI_DIP_BARS
VOLUME_SPIKE_Z = 2.5
# Conviction (in ATRs) at which a detector's strength reaches 1.
CROSS_FULL_ATR = 0.1
BREAKOUT_FULL_ATR = 0.5
PULLBACK_FULL_ATR = 1.0
VOLUME_FULL_Z = 5.0
RSI_FULL_DEPTH = 15.0

__all__ = [
    "DETECTORS",
    "EVENT_LOOKBACK_BARS",
    "EVENT_TYPES",
    "EventSeries",
    "bb_breakout",
    "detect_events",
    "ema_cross",
    "macd_cross",
    "rsi_reversal",
    "trend_pullback",
    "volume_spike",
]


@dataclass(frozen=True)
class EventSeries:
    """One detector's output over a series: direction int8 in {-1, 0, 1}, strength in [0, 1]."""

    direction: NDArray[np.int8]
    strength: FloatArray


# Where a detector fired: `np.nonzero` of its direction, one index array per axis (the last
# one indexes bars). Convictions are computed at these elements only: few bars fire.
Fired = tuple[NDArray[np.intp], ...]


def _col(frame: Frame, name: str) -> FloatArray:
    return np.asarray(frame[name], dtype=np.float64)


def _prev(x: FloatArray) -> FloatArray:
    """x shifted one bar later along the last axis (NaN first)."""
    out = np.empty_like(x)
    if x.shape[-1]:
        out[..., 0] = np.nan
        out[..., 1:] = x[..., :-1]
    return out


def _back(x: FloatArray, at: Fired, lag: int) -> FloatArray:
    """x `lag` bars before each fired element (NaN before the first bar): `_prev` at `at`."""
    *lead, bars = at
    earlier = bars - lag
    out: FloatArray = x[(*lead, np.maximum(earlier, 0))]
    out[earlier < 0] = np.nan
    return out


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    """num/den where den > 0, else 0 (no NaN/inf escapes into strengths)."""
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0)


def _series(
    up: NDArray[np.bool_], down: NDArray[np.bool_], conviction: Callable[[Fired], FloatArray]
) -> EventSeries:
    """Direction from the two masks; strength = 0.5 + 0.5 * clip(conviction, 0, 1) where
    fired, else 0. `conviction(at)` is the conviction at the fired elements `at`."""
    direction = up.astype(np.int8) - down.astype(np.int8)
    at = np.nonzero(direction)
    conv = np.clip(conviction(at), 0.0, 1.0)
    conv[np.isnan(conv)] = 0.0
    strength = np.zeros(direction.shape)
    strength[at] = 0.5 + 0.5 * conv
    return EventSeries(direction=direction, strength=strength)


def _crossing(line: FloatArray, atr: FloatArray, full_atr: float) -> EventSeries:
    prev = _prev(line)
    up = (prev <= 0) & (line > 0)
    down = (prev >= 0) & (line < 0)
    return _series(up, down, lambda at: _ratio(np.abs(line[at] - prev[at]), full_atr * atr[at]))


def ema_cross(frame: Frame) -> EventSeries:
    """ema_12 crossing ema_26; strength from the change of their spread in ATRs."""
    spread = _col(frame, "ema_12") - _col(frame, "ema_26")
    return _crossing(spread, _col(frame, "atr_14"), CROSS_FULL_ATR)


def macd_cross(frame: Frame) -> EventSeries:
    """MACD crossing its signal line (macd_hist changing sign)."""
    return _crossing(_col(frame, "macd_hist"), _col(frame, "atr_14"), CROSS_FULL_ATR)


def rsi_reversal(frame: Frame) -> EventSeries:
    """RSI leaving oversold (up through 30) or overbought (down through 70)."""
    rsi = _col(frame, "rsi_14")
    prev = _prev(rsi)
    up = (prev < RSI_OVERSOLD) & (rsi >= RSI_OVERSOLD)
    down = (prev > RSI_OVERBOUGHT) & (rsi <= RSI_OVERBOUGHT)

    def depth(at: Fired) -> FloatArray:
        # Extremes of the RSI_DIP_BARS bars before this one (fmin/fmax skip the NaN of
        # bars before the first).
        lows, highs = prev[at], prev[at]
        for lag in range(1, RSI_DIP_BARS):
            shifted = _back(rsi, at, lag + 1)
            lows, highs = np.fmin(lows, shifted), np.fmax(highs, shifted)
        dip = np.where(up[at], RSI_OVERSOLD - lows, highs - RSI_OVERBOUGHT)
        return dip / RSI_FULL_DEPTH

    return _series(up, down, depth)


def bb_breakout(frame: Frame) -> EventSeries:
    """Close crossing out of the Bollinger band (momentum breakout)."""
    close, upper, lower = _col(frame, "close"), _col(frame, "bb_upper"), _col(frame, "bb_lower")
    atr = _col(frame, "atr_14")
    prev_close = _prev(close)
    up = (close > upper) & (prev_close <= _prev(upper))
    down = (close < lower) & (prev_close >= _prev(lower))

    def excess(at: Fired) -> FloatArray:
        beyond = np.where(up[at], close[at] - upper[at], lower[at] - close[at])
        return _ratio(beyond, BREAKOUT_FULL_ATR * atr[at])

    return _series(up, down, excess)


def volume_spike(frame: Frame) -> EventSeries:
    """Unusual volume (volume_z >= VOLUME_SPIKE_Z) in the direction of the bar's body."""
    z = _col(frame, "volume_z")
    body = _col(frame, "close") - _col(frame, "open")
    spike = z >= VOLUME_SPIKE_Z
    return _series(
        spike & (body > 0),
        spike & (body < 0),
        lambda at: (z[at] - VOLUME_SPIKE_Z) / (VOLUME_FULL_Z - VOLUME_SPIKE_Z),
    )


def trend_pullback(frame: Frame) -> EventSeries:
    """In a trend, the close reclaims ema_12 after the previous close sat at or beyond it."""
    ema_12, ema_26 = _col(frame, "ema_12"), _col(frame, "ema_26")
    slope, close = _col(frame, "ema_slope"), _col(frame, "close")
    atr = _col(frame, "atr_14")
    prev_close, prev_ema = _prev(close), _prev(ema_12)
    up = (ema_12 > ema_26) & (slope > 0) & (prev_close <= prev_ema) & (close > ema_12)
    down = (ema_12 < ema_26) & (slope < 0) & (prev_close >= prev_ema) & (close < ema_12)
    return _series(
        up,
        down,
        lambda at: _ratio(np.abs(ema_12[at] - ema_26[at]), PULLBACK_FULL_ATR * atr[at]),
    )


DETECTORS: dict[str, Callable[[Frame], EventSeries]] = {
    "ema_cross": ema_cross,
    "macd_cross": macd_cross,
    "rsi_reversal": rsi_reversal,
    "bb_breakout": bb_breakout,
    "volume_spike": volume_spike,
    "trend_pullback": trend_pullback,
}
EVENT_TYPES: tuple[str, ...] = tuple(DETECTORS)


def detect_events(frame: Frame) -> dict[str, EventSeries]:
    """Run every detector over a frame holding OHLCV and feature columns of one series."""
    return {name: detect(frame) for name, detect in DETECTORS.items()}
