"""The live/backtest parity check of `strategy check`: the live driver at every primary
close equals the backtest, bit for bit (see tasks.runs.strategy_check)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, ClosedSeries, index_ns, timeframe_ns
from signalengine.tasks.engine.records import CooldownState, Signal, signals_to_frame
from signalengine.tasks.runs.strategy_base import (
    CheckResult,
    CheckSubject,
    bars_by_timeframe,
    describe_offence,
    signals_before,
    signals_between,
)
from signalengine.tasks.runs.strategy_compare import diff_signals

# Live-driver closes stepped in full; beyond that, PARITY_BLOCKS blocks of them.
MAX_PARITY_CLOSES = 480
PARITY_BLOCKS = 3

__all__ = ["MAX_PARITY_CLOSES", "PARITY_BLOCKS", "check_parity"]


@dataclass(frozen=True)
class _Arrays:
    """One timeframe's bars as arrays, to cut live windows from without copies."""

    timeframe: str
    ts: np.ndarray[Any, np.dtype[np.int64]]
    cols: dict[str, np.ndarray[Any, np.dtype[np.float64]]]

    @classmethod
    def of(cls, bars: pd.DataFrame, timeframe: str) -> _Arrays:
        cols = {c: np.ascontiguousarray(bars[c], dtype=np.float64) for c in OHLCV_COLUMNS}
        return cls(timeframe, index_ns(bars), cols)

    def window(self, at_ns: int, size: int) -> ClosedSeries:
        """The last `size` bars closed by `at_ns` (what the live stream holds in memory)."""
        end = int(np.searchsorted(self.ts, at_ns - timeframe_ns(self.timeframe), "right"))
        begin = max(0, end - size)
        cols = {c: v[begin:end] for c, v in self.cols.items()}
        return ClosedSeries.from_arrays(self.timeframe, self.ts[begin:end], cols)


def _live_blocks(n: int) -> list[range]:
    if n <= MAX_PARITY_CLOSES:
        return [range(n)]
    size = MAX_PARITY_CLOSES // PARITY_BLOCKS
    begins = np.linspace(0, n - size, PARITY_BLOCKS).round().astype(int)
    return [range(int(b), int(b) + size) for b in begins]


def check_parity(subject: CheckSubject, bars_by_symbol: Mapping[str, pd.DataFrame]) -> CheckResult:
    """The live driver, stepping each primary close over all symbols at once (as the
    stream does, with one cooldown state carried), equals the backtest bit for bit."""
    primary, tf_ns = subject.primary_timeframe, timeframe_ns(subject.primary_timeframe)
    frames = {s: bars_by_timeframe(b, subject.timeframes) for s, b in bars_by_symbol.items()}
    base = {s: subject.history(f, symbol=s) for s, f in frames.items()}
    opens_by = {}
    for symbol, bars_tf in frames.items():
        as_of = int(index_ns(bars_tf["1m"])[-1]) + timeframe_ns("1m")
        opens = index_ns(bars_tf[primary])
        opens_by[symbol] = opens[opens + tf_ns <= as_of]
    opens_all = np.unique(np.concatenate([*opens_by.values(), np.empty(0, np.int64)]))
    read = [tf for tf in frames[next(iter(frames))] if tf in (*subject.timeframes, primary)]
    arrays = {s: {tf: _Arrays.of(f[tf], tf) for tf in read} for s, f in frames.items()}
    closes = compared = 0
    for block in _live_blocks(opens_all.size):
        first, last = int(opens_all[block.start]), int(opens_all[block.stop - 1])
        earlier = [signals_before(f, first) for f in base.values()]
        earlier = [f for f in earlier if len(f)]
        state = CooldownState.from_signals(pd.concat(earlier)) if earlier else CooldownState()
        live: list[Signal] = []
        for i in block:
            at_ns = int(opens_all[i]) + tf_ns
            series = {
                symbol: {
                    tf: arrays[symbol][tf].window(at_ns, subject.live_window_bars) for tf in read
                }
                for symbol in frames
            }
            live += subject.latest(series, at=pd.Timestamp(at_ns, tz="UTC"), state=state)
        closes += len(block)
        live_frame = signals_to_frame(live)
        for symbol, ref_all in base.items():
            ref = signals_between(ref_all, first, last)
            compared += len(ref)
            mine = live_frame[live_frame["symbol"] == symbol] if len(live_frame) else live_frame
            diffs = diff_signals(ref, mine)
            if diffs:
                return CheckResult(
                    False,
                    {
                        "symbol": symbol,
                        "closes": closes,
                        "differing_signals": len(diffs),
                        "first": describe_offence(
                            subject,
                            diffs[0],
                            frames[symbol],
                            _live_view(frames[symbol], diffs[0].ts, subject),
                        )
                        | {"reference": "backtest", "other": "live"},
                    },
                )
    return CheckResult(closes > 0, {"closes": closes, "signals": compared})


def _live_view(
    bars_tf: Mapping[str, pd.DataFrame], ts: pd.Timestamp, subject: CheckSubject
) -> dict[str, pd.DataFrame]:
    """What the live driver holds at the close of primary bar `ts`: per timeframe the last
    `live_window_bars` bars closed by then (the 1m ones too, which fix the close)."""
    at_ns = ts.value + timeframe_ns(subject.primary_timeframe)
    out = {}
    for tf, frame in bars_tf.items():
        closed = frame.iloc[
            : int(np.searchsorted(index_ns(frame), at_ns - timeframe_ns(tf), "right"))
        ]
        out[tf] = closed if tf == "1m" else closed.iloc[-subject.live_window_bars :]
    return out
