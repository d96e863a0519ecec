"""The pieces every `strategy check` shares: the strategy as the checks see it
(`CheckSubject`), a check's outcome, the frames per timeframe, and how an offending signal
is described (the features that moved)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from signalengine.tasks.engine.buckets import ClosedSeries, resample_bars
from signalengine.tasks.engine.records import CooldownState, Signal
from signalengine.tasks.runs.strategy_compare import SignalDiff, diff_features

CHECK_RUN = "strategy-check"

__all__ = [
    "CHECK_RUN",
    "CheckResult",
    "CheckSubject",
    "bars_by_timeframe",
    "describe_offence",
    "emitted_by",
    "feature_diff_at",
    "signal_times",
    "signals_before",
    "signals_between",
    "signals_from",
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


def emitted_by(frame: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[pd.to_datetime(frame["emitted_at"], utc=True) <= cut]


def signals_from(frame: pd.DataFrame, ts: pd.Timestamp) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[pd.to_datetime(frame["ts"], utc=True) >= ts]


def feature_diff_at(
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


def describe_offence(
    subject: CheckSubject,
    diff: SignalDiff,
    ref_tf: Mapping[str, pd.DataFrame],
    other_tf: Mapping[str, pd.DataFrame],
) -> dict[str, Any]:
    """The verdict's description of one differing signal, with the features that moved."""
    out = diff.as_dict()
    if not out["features"]:
        out["features"] = feature_diff_at(subject, ref_tf, other_tf, diff.ts)
    votes = [f"vote_{tf}" for tf in diff.votes]  # an MTF vote that moved names its timeframe
    named = [f["name"] for f in out["features"]]
    out["moved"] = list(dict.fromkeys([*named, *votes])) or [
        f for f in out["fields"] if f != "features"
    ]
    return out


def signal_times(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(frame["ts"], utc=True)).asi8)


def signals_before(frame: pd.DataFrame, ts_ns: int) -> pd.DataFrame:
    return frame[signal_times(frame) < ts_ns] if len(frame) else frame


def signals_between(frame: pd.DataFrame, first_ns: int, last_ns: int) -> pd.DataFrame:
    if not len(frame):
        return frame
    ts = signal_times(frame)
    return frame[(ts >= first_ns) & (ts <= last_ns)]
