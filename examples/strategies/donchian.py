"""A plain Donchian channel breakout with a percent stop: passes `signalengine strategy check`.

Long when the close breaks above the highest high of the previous `period` bars, short
when it breaks below their lowest low; take profit and stop loss at fixed percentages of
the entry. Everything it reads is window-local (the channel of the last `period` bars,
nothing recursive; the features it records are window-local too), so its warm-up is
`max(period, 20) + 1` bars and it declares that.
Its MTF vote is the side of the 20-bar mean the close is on, on its primary timeframe
only (recorded, not required): a plain breakout needs no other timeframe.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.features import WINDOW_LOOKBACK_BARS
from signalengine.tasks.engine.strategy import (
    Entry,
    Frame,
    Strategy,
    StrategyParams,
    percent_exits,
    rolling_extreme,
)

__all__ = ["Donchian", "DonchianParams"]


class DonchianParams(StrategyParams):
    """Channel length and the percent exits."""

    period: int = Field(20, ge=2, le=500, description="Channel length in primary bars.")
    stop_pct: float = Field(1.0, gt=0, description="Stop loss, % of the entry price.")
    target_pct: float = Field(2.0, gt=0, description="Take profit, % of the entry price.")


def _col(frame: Frame, name: str) -> FloatArray:
    return np.asarray(frame[name], dtype=np.float64)


class Donchian(Strategy):
    """Donchian breakout (see module docstring)."""

    Params = DonchianParams
    params: DonchianParams

    @property
    def timeframes(self) -> tuple[str, ...]:
        return (self.primary_timeframe,)

    @property
    def mtf_alignment_required(self) -> bool:
        return False

    @property
    def mtf_min_aligned(self) -> int:
        return 1

    @property
    def lookback_bars(self) -> int:
        return max(self.params.period, WINDOW_LOOKBACK_BARS) + 1

    @property
    def entry_lookback_bars(self) -> int:
        return self.params.period

    @property
    def filter_columns(self) -> tuple[str, ...]:
        # window-local columns only: a recursive one (atr_14, ema_*) would make the
        # recorded features depend on where the history starts (the warm-up check says so)
        return ("channel_high", "channel_low", "bb_width_pct", "volume_z", "ret_20")

    def channel(self, frame: Frame) -> tuple[FloatArray, FloatArray]:
        """(highest high, lowest low) of the `period` bars before each bar."""
        period = self.params.period
        high = rolling_extreme(_col(frame, "high"), period, np.fmax, shift=1)
        low = rolling_extreme(_col(frame, "low"), period, np.fmin, shift=1)
        return high, low

    def breakout(self, frame: Frame) -> tuple[NDArray[np.int8], dict[str, FloatArray]]:
        """Direction per bar (+1 above the channel, -1 below) and the channel columns."""
        close = _col(frame, "close")
        high, low = self.channel(frame)
        direction = (close > high).astype(np.int8) - (close < low).astype(np.int8)
        return direction, {"channel_high": high, "channel_low": low}

    def entry(self, frame: Frame) -> Entry:
        direction, columns = self.breakout(frame)
        return Entry(direction, np.abs(direction).astype(np.float64), features=columns)

    def fires(self, frame: Frame, entry: Entry) -> NDArray[np.bool_]:
        return np.asarray(entry.direction != 0, dtype=np.bool_)

    def vote(self, frame: Frame) -> NDArray[np.int8]:
        """The side of the 20-bar mean the close is on (row by row: the engine hands a vote
        the rows it reads only)."""
        close, middle = _col(frame, "close"), _col(frame, "bb_middle")
        return (close > middle).astype(np.int8) - (close < middle).astype(np.int8)

    def exits(
        self, entry_price: FloatArray, side: NDArray[np.int64], frame: Frame
    ) -> tuple[FloatArray, FloatArray]:
        return percent_exits(entry_price, side, self.params.target_pct, self.params.stop_pct)
