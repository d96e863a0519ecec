"""`signalengine strategy check`: prove a strategy has no lookahead, warm-up bias, live/backtest
drift or nondeterminism, on stored 1m klines, before it may run live.

Pure logic over 1m bars per symbol (the database read is `load_check_bars`); the strategy
comes in as a `CheckSubject`: its two drivers (history = backtest, latest = live) and
what it declares (timeframes, warm-up, cooldown, live window). Four checks:

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from signalengine.tasks.engine.buckets import (
    OHLCV_COLUMNS,
    ClosedSeries,
    index_ns,
    resample_bars,
    timeframe_ns,
)
from signalengine.tasks.engine.records import CooldownState, Signal, signals_to_frame
from signalengine.tasks.runs.strategy_compare import (
    SignalDiff,
    diff_features,
    diff_signals,
    scramble_after,
)

CHECK_RUN = "strategy-check"
DEFAULT_CUTS = 5
DEFAULT_WARMUP_STARTS = 3
# Primary bars compared after the declared warm-up, at least (a fifth of it if longer).
WARMUP_MARGIN_BARS = 100
# Live-driver closes per symbol stepped in full; beyond that, PARITY_BLOCKS blocks of them.
MAX_PARITY_CLOSES = 480
PARITY_BLOCKS = 3

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


class HistoryDriver(Protocol):
    def __call__(self, bars_by_tf: Mapping[str, pd.DataFrame], *, symbol: str) -> pd.DataFrame: ...


class LiveDriver(Protocol):
    def __call__(
        self,
        series_by_symbol: Mapping[str, Mapping[str, ClosedSeries]],
        *,
        at: pd.Timestamp,
        state: CooldownState,
    ) -> list[Signal]: ...


@dataclass(frozen=True)
class CheckSubject:
    """A strategy as the checks see it.

    `history(bars_by_tf, symbol=)`: the backtest driver, signals (SIGNAL_COLUMNS frame) of
    one symbol from frames per timeframe (UTC open-time index, OHLCV; "1m" included).
    `latest(series_by_symbol, at=, state=)`: the live driver at the primary close `at`.
    `features(bars_by_tf)`: the strategy's feature columns per primary bar (index: open
    time), used to name what moved for a signal that appeared or vanished.
    `lookback_bars`: declared warm-up in primary bars; `cooldown_bars` in primary bars.
    """

    name: str
    version: str | None
    timeframes: tuple[str, ...]
    primary_timeframe: str
    lookback_bars: int
    cooldown_bars: int
    live_window_bars: int
    history: HistoryDriver
    latest: LiveDriver
    features: Callable[[Mapping[str, pd.DataFrame]], pd.DataFrame]


@dataclass
class CheckResult:
    """One check's outcome; `details` are JSON-safe."""

    passed: bool
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, **self.details, "seconds": round(self.seconds, 3)}


def bars_by_timeframe(bars_1m: pd.DataFrame, timeframes: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The 1m bars and every other timeframe bucketed from them (as the database does)."""
    out = {"1m": bars_1m}
    for tf in timeframes:
        if tf != "1m":
            out[tf] = resample_bars(bars_1m, tf)
    return out


def _emitted_by(frame: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[pd.to_datetime(frame["emitted_at"], utc=True) <= cut]


def _from(frame: pd.DataFrame, ts: pd.Timestamp) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[pd.to_datetime(frame["ts"], utc=True) >= ts]


def _feature_diff_at(
    subject: CheckSubject,
    ref_tf: Mapping[str, pd.DataFrame],
    other_tf: Mapping[str, pd.DataFrame],
    ts: pd.Timestamp,
) -> list[dict[str, Any]]:
    """The strategy's feature columns that differ at primary bar `ts` between two inputs."""
    a, b = subject.features(ref_tf), subject.features(other_tf)
    row_a = {str(k): v for k, v in a.loc[ts].items()} if ts in a.index else {}
    row_b = {str(k): v for k, v in b.loc[ts].items()} if ts in b.index else {}
    return [{"name": n, "reference": x, "other": y} for n, x, y in diff_features(row_a, row_b)]


def _offence(
    subject: CheckSubject,
    diff: SignalDiff,
    ref_tf: Mapping[str, pd.DataFrame],
    other_tf: Mapping[str, pd.DataFrame],
) -> dict[str, Any]:
    """The verdict's description of one differing signal, with the features that moved."""
    out = diff.as_dict()
    if not out["features"]:
        out["features"] = _feature_diff_at(subject, ref_tf, other_tf, diff.ts)
    votes = [f"vote_{tf}" for tf in diff.votes]  # an MTF vote that moved names its timeframe
    named = [f["name"] for f in out["features"]]
    out["moved"] = list(dict.fromkeys([*named, *votes])) or [
        f for f in out["fields"] if f != "features"
    ]
    return out


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
                diffs = diff_signals(_emitted_by(base, cut), _emitted_by(other, cut))
                if not mirror:
                    tried.setdefault(symbol, []).append(cut.isoformat())
                if not diffs:
                    continue
                culprits = []
                for tf in subject.timeframes:  # which timeframe's future leaks in
                    mixed = {**base_tf, tf: scr_tf[tf]}
                    one = subject.history(mixed, symbol=symbol)
                    runs += 1
                    if diff_signals(_emitted_by(base, cut), _emitted_by(one, cut)):
                        culprits.append(tf)
                return CheckResult(
                    False,
                    {
                        "symbol": symbol,
                        "cut": cut.isoformat(),
                        "changed_signals": len(diffs),
                        "timeframes": culprits,
                        "first": _offence(subject, diffs[0], base_tf, scr_tf),
                        "runs": runs,
                    },
                )
    return CheckResult(bool(tried), {"cuts": tried, "runs": runs})


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
        ref = _from(base, pd.Timestamp(s, tz="UTC"))
        parts = [_ts_ns(f) for f in (ref, other) if len(f)]
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
                    "first": _offence(subject, late, base_tf, run.part_tf),
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
        earlier = [_before(f, first) for f in base.values()]
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
            ref = _between(ref_all, first, last)
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
                        "first": _offence(
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


def _ts_ns(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(frame["ts"], utc=True)).asi8)


def _before(frame: pd.DataFrame, ts_ns: int) -> pd.DataFrame:
    return frame[_ts_ns(frame) < ts_ns] if len(frame) else frame


def _between(frame: pd.DataFrame, first_ns: int, last_ns: int) -> pd.DataFrame:
    if not len(frame):
        return frame
    ts = _ts_ns(frame)
    return frame[(ts >= first_ns) & (ts <= last_ns)]


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
