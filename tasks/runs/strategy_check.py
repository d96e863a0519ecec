"""`signalengine strategy check`: prove a strategy has no lookahead, warm-up bias, live/backtest
drift or nondeterminism, on stored 1m klines, before it may run live.

Pure logic over 1m bars per symbol (the database read and the verdicts are in
tasks.runs.strategy_gate; the warm-up and parity checks in strategy_warmup and
strategy_parity); the strategy comes in as a `CheckSubject` (strategy_base): its two
drivers (history = backtest, latest = live) and what it declares (timeframes, warm-up,
cooldown, live window). Four checks:

- lookahead: for several cut points T (the emission times of signals spread over the
  range, else evenly spread times) every 1m bar opening at or after T is replaced by a
  seeded random walk, and by its mirror image (so a rule reading the next close flips one
  way or the other); the backtest driver runs again and no signal emitted at or before T
  may change. An offence is re-run with one timeframe's bars scrambled at a time to name
  the timeframe(s) it comes from, and the first offending signal names the features
  that moved (the signal's own `features`, or the strategy's feature columns at that bar
  for a signal that appeared or vanished).
- warm-up: histories starting at several later points (aligned to the largest timeframe)
  must give the backtest's signals once past the declared `lookback_bars` primary bars.
  A comparison starts at the first bar with no signal of either run within the cooldown
  before it (so the cooldown state of both runs is empty there: what is compared is the
  indicators' warm-up, not the missing signal history). The minimal warm-up that holds
  is found by bisection (agreement is monotone in the warm-up length).
- parity: the live driver called at every primary close (blocks of them for long ranges,
  each block's cooldown state rebuilt from the backtest's earlier signals, as a restarted
  stream does) over trailing windows of `live_window_bars` equals the backtest, bit for bit.
- determinism: two fresh instances give bit-identical signals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from signalengine.tasks.engine.buckets import index_ns
from signalengine.tasks.runs.strategy_base import (
    CHECK_RUN,
    CheckResult,
    CheckSubject,
    bars_by_timeframe,
    describe_offence,
    emitted_by,
)
from signalengine.tasks.runs.strategy_compare import diff_signals, scramble_after
from signalengine.tasks.runs.strategy_parity import check_parity
from signalengine.tasks.runs.strategy_warmup import check_warmup

DEFAULT_CUTS = 5

__all__ = [
    "CHECK_RUN",
    "CheckSubject",
    "bars_by_timeframe",
    "check_determinism",
    "check_lookahead",
    "check_parity",
    "check_warmup",
    "run_checks",
]


def _cut_points(base: pd.DataFrame, bars_1m: pd.DataFrame, n: int) -> list[pd.Timestamp]:
    """`n` cut times: emission times of signals spread over the range (a cut at a signal's
    emission keeps that signal in the compared prefix), topped up with evenly spread
    minute times; only cuts with bars on both sides."""
    ts = index_ns(bars_1m)
    if ts.size < 2:
        return []
    lo, hi = int(ts[ts.size // 10]), int(ts[-1 - ts.size // 10])
    cuts: list[int] = []
    if not base.empty:
        emitted = pd.DatetimeIndex(pd.to_datetime(base["emitted_at"], utc=True)).asi8
        emitted = np.unique(emitted[(emitted > lo) & (emitted < hi)])
        if emitted.size:
            picks = np.linspace(0, emitted.size - 1, min(n, emitted.size)).round().astype(int)
            cuts = sorted({int(emitted[i]) for i in picks})
    for t in np.linspace(lo, hi, n + 2)[1:-1]:
        if len(cuts) >= n:
            break
        minute = int(t) - int(t) % 60_000_000_000
        if minute not in cuts:
            cuts.append(minute)
    return [pd.Timestamp(c, tz="UTC") for c in sorted(cuts)]


def check_lookahead(
    subject: CheckSubject,
    bars_by_symbol: Mapping[str, pd.DataFrame],
    *,
    cuts: int = DEFAULT_CUTS,
    seed: int = 16,
) -> CheckResult:
    """No signal emitted at or before T changes when every bar after T is scrambled."""
    runs = 0
    tried: dict[str, list[str]] = {}
    for symbol, bars in bars_by_symbol.items():
        base_tf = bars_by_timeframe(bars, subject.timeframes)
        base = subject.history(base_tf, symbol=symbol)
        for k, cut in enumerate(_cut_points(base, bars, cuts)):
            for mirror in (False, True):
                scrambled = scramble_after(bars, cut.value, seed=seed + k, mirror=mirror)
                scr_tf = bars_by_timeframe(scrambled, subject.timeframes)
                other = subject.history(scr_tf, symbol=symbol)
                runs += 1
                diffs = diff_signals(emitted_by(base, cut), emitted_by(other, cut))
                if not mirror:
                    tried.setdefault(symbol, []).append(cut.isoformat())
                if not diffs:
                    continue
                culprits = []
                for tf in subject.timeframes:  # which timeframe's future leaks in
                    mixed = {**base_tf, tf: scr_tf[tf]}
                    one = subject.history(mixed, symbol=symbol)
                    runs += 1
                    if diff_signals(emitted_by(base, cut), emitted_by(one, cut)):
                        culprits.append(tf)
                return CheckResult(
                    False,
                    {
                        "symbol": symbol,
                        "cut": cut.isoformat(),
                        "changed_signals": len(diffs),
                        "timeframes": culprits,
                        "first": describe_offence(subject, diffs[0], base_tf, scr_tf),
                        "runs": runs,
                    },
                )
    return CheckResult(bool(tried), {"cuts": tried, "runs": runs})


def check_determinism(
    make: Callable[[], CheckSubject], bars_by_symbol: Mapping[str, pd.DataFrame]
) -> CheckResult:
    """Two fresh instances of the strategy give bit-identical signals and the same version."""
    one, two = make(), make()
    if one.version != two.version:
        return CheckResult(False, {"error": f"version differs: {one.version} vs {two.version}"})
    signals = 0
    for symbol, bars in bars_by_symbol.items():
        a = one.history(bars_by_timeframe(bars, one.timeframes), symbol=symbol)
        b = two.history(bars_by_timeframe(bars.copy(), two.timeframes), symbol=symbol)
        signals += len(a)
        diffs = diff_signals(a, b)
        if diffs:
            return CheckResult(False, {"symbol": symbol, "first": diffs[0].as_dict()})
    return CheckResult(True, {"signals": signals})


def _timed(run: Callable[[], CheckResult]) -> CheckResult:
    started = time.perf_counter()
    result = run()
    result.seconds = time.perf_counter() - started
    return result


def run_checks(
    make: Callable[[], CheckSubject],
    bars_by_symbol: Mapping[str, pd.DataFrame],
    *,
    cuts: int = DEFAULT_CUTS,
) -> dict[str, Any]:
    """Every check on the given 1m bars; the JSON verdict (`passed` when all four pass)."""
    subject = make()
    data = {s: b for s, b in bars_by_symbol.items() if len(b)}
    checks = {
        "lookahead": _timed(lambda: check_lookahead(subject, data, cuts=cuts)),
        "warmup": _timed(lambda: check_warmup(subject, data)),
        "parity": _timed(lambda: check_parity(subject, data)),
        "determinism": _timed(lambda: check_determinism(make, data)),
    }
    signals = int(checks["determinism"].details.get("signals") or 0)
    verdict: dict[str, Any] = {
        "strategy": subject.name,
        "strategy_version": subject.version,
        # no signal on these bars proves nothing: such a check does not pass
        "passed": signals > 0 and all(c.passed for c in checks.values()),
        "checks": {name: c.as_dict() for name, c in checks.items()},
        "symbols": list(data),
        "bars": int(sum(len(b) for b in data.values())),
        "signals": signals,
    }
    if signals == 0:
        verdict["error"] = "the strategy emitted no signal on these bars: nothing was checked"
    return verdict
