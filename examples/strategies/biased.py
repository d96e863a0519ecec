"""Deliberately biased strategies: each one must FAIL `signalengine strategy check`, and the
report must name what it peeks at. They are the Donchian breakout (donchian.py) plus one
classic mistake each, the kinds freqtrade's lookahead/recursive analysis is known to miss:

- `NextBarPeek`: a one-bar lookahead; it keeps a breakout only if the *next* bar's close
  confirms it (`next_close`, the close of bar i+1, read at bar i);
- `CentredMean`: a centred rolling mean (`centred_mean`, bars i-k .. i+k: half of its window
  lies in the future), the pandas `rolling(center=True)` mistake;
- `UnclosedHigherTimeframe`: it trades with the 1h bar its trigger falls in, built from
  the primary bars and merged back by open time (`hour_close`: that hour's final close,
  still in the future at every 5m bar but its last), freqtrade's informative-pair mistake.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from examples.strategies.donchian import Donchian, DonchianParams
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, FloatArray
from signalengine.tasks.engine.strategy import Entry, Frame

__all__ = ["CentredMean", "CentredMeanParams", "NextBarPeek", "UnclosedHigherTimeframe"]


def _col(frame: Frame, name: str) -> FloatArray:
    return np.asarray(frame[name], dtype=np.float64)


def _next(x: FloatArray) -> FloatArray:
    """x one bar *earlier* along the last axis: row i holds bar i+1 (NaN last). The bug."""
    out = np.full(x.shape, np.nan)
    out[..., :-1] = x[..., 1:]
    return out


class NextBarPeek(Donchian):
    """Donchian breakout confirmed by the next bar's close (reads bar i+1)."""

    @property
    def filter_columns(self) -> tuple[str, ...]:
        return (*super().filter_columns, "next_close")

    def entry(self, frame: Frame) -> Entry:
        direction, columns = self.breakout(frame)
        close = _col(frame, "close")
        next_close = _next(close)
        confirmed = np.where(direction > 0, next_close > close, next_close < close)
        direction = np.where(confirmed, direction, 0).astype(np.int8)
        features = {**columns, "next_close": next_close}
        return Entry(direction, np.abs(direction).astype(np.float64), features=features)


class CentredMeanParams(DonchianParams):
    """The Donchian parameters and the centred mean's half width."""

    half_window: int = Field(5, ge=1, le=100, description="Bars on each side of the mean.")


class CentredMean(Donchian):
    """Donchian breakout taken only on the side of a centred rolling mean of the close."""

    Params = CentredMeanParams
    params: CentredMeanParams

    @property
    def filter_columns(self) -> tuple[str, ...]:
        return (*super().filter_columns, "centred_mean")

    def centred_mean(self, close: FloatArray) -> FloatArray:
        """Mean of bars i-k .. i+k (NaN where the window is incomplete)."""
        k = self.params.half_window
        out = np.full(close.shape, np.nan)
        n = close.shape[-1]
        if n <= 2 * k:
            return out
        total = np.zeros(close[..., : n - 2 * k].shape)
        for j in range(2 * k + 1):
            total = total + close[..., j : n - 2 * k + j]
        out[..., k : n - k] = total / (2 * k + 1)
        return out

    def entry(self, frame: Frame) -> Entry:
        direction, columns = self.breakout(frame)
        close = _col(frame, "close")
        mean = self.centred_mean(close)
        agrees = np.where(direction > 0, close > mean, close < mean)
        direction = np.where(agrees, direction, 0).astype(np.int8)
        features = {**columns, "centred_mean": mean}
        return Entry(direction, np.abs(direction).astype(np.float64), features=features)


class UnclosedHigherTimeframe(Donchian):
    """Donchian breakout taken only in the direction of the hour it falls in (see module
    docstring): the hour's bars are grouped from the primary bars, and its close is the
    close of the hour's *last* bar, which a backtest already holds at every bar before it."""

    @property
    def filter_columns(self) -> tuple[str, ...]:
        return (*super().filter_columns, "hour_close")

    def hour_close(self, frame: Frame) -> tuple[FloatArray, FloatArray]:
        """(open, close) of the hour each bar falls in, as a resample labelled by open
        time and merged back onto the bars would give (bars grouped by position: the
        engine's frames carry no times, and histories start on whole hours)."""
        per_hour = max(1, 60 // TIMEFRAME_MINUTES[self.primary_timeframe])
        open_, close = _col(frame, "open"), _col(frame, "close")
        n = close.shape[-1]
        starts = np.arange(n) // per_hour * per_hour
        ends = np.minimum(starts + per_hour, n) - 1
        return open_[..., starts], close[..., ends]

    def entry(self, frame: Frame) -> Entry:
        direction, columns = self.breakout(frame)
        hour_open, hour_close = self.hour_close(frame)
        body = np.sign(hour_close - hour_open)
        direction = np.where(body == direction, direction, 0).astype(np.int8)
        features = {**columns, "hour_close": hour_close}
        return Entry(direction, np.abs(direction).astype(np.float64), features=features)
