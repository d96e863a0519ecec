"""The warm-up (recursive bias) check of `strategy check`: histories starting later give the
full history's signals once past the declared `lookback_bars` (see tasks.runs.strategy_check)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from signalengine.tasks.engine.buckets import index_ns, timeframe_ns
from signalengine.tasks.runs.strategy_base import (
    CheckResult,
    CheckSubject,
    bars_by_timeframe,
    describe_offence,
    signal_times,
    signals_from,
)
from signalengine.tasks.runs.strategy_compare import SignalDiff, diff_signals

DEFAULT_WARMUP_STARTS = 3
# Primary bars compared after the declared warm-up, at least (a fifth of it if longer).
WARMUP_MARGIN_BARS = 100

__all__ = ["DEFAULT_WARMUP_STARTS", "WARMUP_MARGIN_BARS", "check_warmup"]


def _compare_start(
    signal_ts: np.ndarray[Any, np.dtype[np.int64]], t0: int, *, cooldown_ns: int, tf_ns: int
) -> int:
    """The first primary bar time >= t0 with no signal in [t - cooldown, t)."""
    t = t0
    while cooldown_ns > 0:
        lo = int(np.searchsorted(signal_ts, t - cooldown_ns, side="left"))
        hi = int(np.searchsorted(signal_ts, t, side="left"))
        if lo == hi:
            break
        t = int(signal_ts[hi - 1]) + cooldown_ns + tf_ns
    return t


@dataclass(frozen=True)
class _LaterStart:
    """A history starting at `start_ns` against the full one: where their signals differ."""

    symbol: str
    start_ns: int
    span_bars: int  # primary bars from the start to the end of the data
    times: np.ndarray[Any, np.dtype[np.int64]]  # trigger bars of either run's signals
    diffs: list[SignalDiff]
    part_tf: dict[str, pd.DataFrame]

    def compare_from(self, warmup: int, *, cooldown_ns: int, tf_ns: int) -> int:
        """Where signals are compared after `warmup` primary bars (see module docstring)."""
        t0 = self.start_ns + warmup * tf_ns
        return _compare_start(self.times, t0, cooldown_ns=cooldown_ns, tf_ns=tf_ns)

    def holds(self, warmup: int, *, cooldown_ns: int, tf_ns: int) -> bool:
        """True when every signal past `warmup` bars equals the full history's."""
        if not self.diffs:
            return True
        since = self.compare_from(warmup, cooldown_ns=cooldown_ns, tf_ns=tf_ns)
        return self.diffs[-1].ts.value < since

    def minimal(self, *, cooldown_ns: int, tf_ns: int) -> int:
        """The least warm-up that holds (bisection: holding is monotone in the warm-up)."""
        lo, hi = 0, self.span_bars + 1  # past the data, it holds vacuously
        while lo < hi:
            mid = (lo + hi) // 2
            if self.holds(mid, cooldown_ns=cooldown_ns, tf_ns=tf_ns):
                hi = mid
            else:
                lo = mid + 1
        return lo


def _later_starts(
    subject: CheckSubject, symbol: str, bars: pd.DataFrame, *, starts: int
) -> tuple[dict[str, pd.DataFrame], list[_LaterStart]]:
    """The full history's frames and `starts` later-starting runs of one symbol; the starts
    leave the declared warm-up plus a margin of bars to compare after it."""
    tf_ns = timeframe_ns(subject.primary_timeframe)
    align = max(timeframe_ns(tf) for tf in (*subject.timeframes, subject.primary_timeframe))
    declared = subject.lookback_bars
    ts = index_ns(bars)
    base_tf = bars_by_timeframe(bars, subject.timeframes)
    if ts.size < 2:
        return base_tf, []
    end = int(ts[-1])
    latest = end - (declared + _margin(declared)) * tf_ns
    if latest <= int(ts[0]):
        return base_tf, []
    base = subject.history(base_tf, symbol=symbol)
    out = []
    for s in np.linspace(int(ts[0]), latest, starts + 1)[1:].astype(np.int64).tolist():
        s += -s % align  # whole buckets of every timeframe from the start
        part_tf = bars_by_timeframe(bars[ts >= s], subject.timeframes)
        other = subject.history(part_tf, symbol=symbol)
        ref = signals_from(base, pd.Timestamp(s, tz="UTC"))
        parts = [signal_times(f) for f in (ref, other) if len(f)]
        times = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
        diffs = diff_signals(ref, other)
        span = (end - s) // tf_ns
        out.append(_LaterStart(symbol, s, span, times.astype(np.int64), diffs, part_tf))
    return base_tf, out


def _margin(declared: int) -> int:
    return max(WARMUP_MARGIN_BARS, declared // 5)


def check_warmup(
    subject: CheckSubject,
    bars_by_symbol: Mapping[str, pd.DataFrame],
    *,
    starts: int = DEFAULT_WARMUP_STARTS,
) -> CheckResult:
    """Later-starting histories give the same signals once past `lookback_bars`."""
    tf_ns = timeframe_ns(subject.primary_timeframe)
    steps = {"cooldown_ns": subject.cooldown_bars * tf_ns, "tf_ns": tf_ns}
    declared = subject.lookback_bars
    minimal, offence = 0, None
    per_start: list[dict[str, Any]] = []
    for symbol, bars in bars_by_symbol.items():
        base_tf, runs = _later_starts(subject, symbol, bars, starts=starts)
        for run in runs:
            least = run.minimal(**steps)
            held = run.holds(declared, **steps)
            start = pd.Timestamp(run.start_ns, tz="UTC").isoformat()
            per_start.append(
                {"symbol": symbol, "start": start, "minimal_warmup_bars": least, "holds": held}
            )
            minimal = max(minimal, least)
            if not held and offence is None:
                since = run.compare_from(declared, **steps)
                late = next(d for d in run.diffs if d.ts.value >= since)
                offence = {
                    "symbol": symbol,
                    "start": start,
                    "first": describe_offence(subject, late, base_tf, run.part_tf),
                }
    details: dict[str, Any] = {
        "declared_lookback_bars": declared,
        "minimal_warmup_bars": minimal,
        "starts": per_start,
    }
    if not per_start:
        margin = _margin(declared)
        need = pd.Timedelta((declared + margin) * tf_ns, unit="ns")
        details["error"] = (
            f"not enough history: the warm-up check needs more than {declared} + {margin}"
            f" {subject.primary_timeframe} bars ({need}) of 1m bars per symbol"
        )
    if offence is not None:
        details.update(offence)
    return CheckResult(bool(per_start) and offence is None, details)
