"""The domain vocabulary every layer shares: timeframes, run ids, directions, outcomes, arrays.

One home for each word (DESIGN §3): a timeframe is a key of TIMEFRAME_MINUTES ("5m");
the relation of a timeframe is `klines_<tf>`; the live stream's signals carry run id
LIVE_RUN and those of a disabled symbol SHADOW_RUN; any other run id is a backtest or a
replay. Nothing here touches the database or the settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

TIMEFRAME_MINUTES: Final[dict[str, int]] = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "12h": 720,
    "1d": 1440,
}

LIVE_RUN: Final = "live"
SHADOW_RUN: Final = "shadow"
# The built-in engine's strategy name; rows stored before strategies existed carry it.
DEFAULT_STRATEGY: Final = "default"
# A strategy name as it appears in signals, routes, metric labels and model names
# (`signalengine-filter-<strategy>`): lowercase, digits, '_' and '-', at most 64 characters.
STRATEGY_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Runs the settle flow claims by default: the stream's own signals.
STREAM_RUNS: Final[tuple[str, ...]] = (LIVE_RUN, SHADOW_RUN)

Direction = Literal["long", "short"]
Outcome = Literal["tp_hit", "sl_hit", "expired"]
SignalStatus = Literal["open", "tp_hit", "sl_hit", "expired"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("tp_hit", "sl_hit", "expired")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

__all__ = [
    "DEFAULT_STRATEGY",
    "LIVE_RUN",
    "OUTCOMES",
    "SHADOW_RUN",
    "STRATEGY_NAME_PATTERN",
    "STREAM_RUNS",
    "TIMEFRAME_MINUTES",
    "BoolArray",
    "Direction",
    "FloatArray",
    "IntArray",
    "Outcome",
    "SignalStatus",
    "engine_bucket_order",
    "source_timeframe",
    "timeframe_relation",
]


def timeframe_relation(timeframe: str) -> str:
    """The relation holding a timeframe's bars: klines_1m, klines_5m ..."""
    if timeframe not in TIMEFRAME_MINUTES:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    return f"klines_{timeframe}"


def source_timeframe(timeframe: str, available: list[str] | tuple[str, ...]) -> str:
    """The largest available smaller timeframe dividing this one (at worst 1m, i.e. klines).

    Both backends build each timeframe from this one: 15m from 5m, 1h from 15m, 4h from 1h.
    """
    minutes = TIMEFRAME_MINUTES[timeframe]
    divisors = [
        tf
        for tf in available
        if TIMEFRAME_MINUTES[tf] < minutes and minutes % TIMEFRAME_MINUTES[tf] == 0
    ]
    return max(divisors, key=TIMEFRAME_MINUTES.__getitem__, default="1m")


def engine_bucket_order(timeframes: Iterable[str], primary: str) -> list[tuple[str, str]]:
    """(timeframe, the timeframe it is bucketed from) for every timeframe above 1m, in the
    order the engine builds them: the primary from 1m first (its volume is summed over 1m
    bars), then the others ascending, each from the largest one built before it that
    divides it (1h from 15m), as the relations are. The backtest and the live windows
    follow it, so both make the same buckets bit for bit."""
    ordered = sorted(set(timeframes) - {"1m"}, key=TIMEFRAME_MINUTES.__getitem__)
    if primary in ordered:
        ordered.remove(primary)
        ordered.insert(0, primary)
    plan: list[tuple[str, str]] = []
    for tf in ordered:
        built = ["1m", *(t for t, _ in plan)] if tf != primary else ["1m"]
        plan.append((tf, source_timeframe(tf, built)))
    return plan
