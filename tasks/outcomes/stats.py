"""Trade statistics: the one definition, used by rollups, the backtest summary and the API.

Input: settled trades (rows of `signal_performance`), put in exit order — by `exit_time`,
ties by `signal_id` — before anything order-dependent is computed. Definitions:
- win = `tp_hit`, loss = `sl_hit`; win_rate = wins / count (expired trades count);
- sharpe = mean / sample std of per-trade `return_pct` (not annualized; None under two
  trades or with zero spread);
- profit_factor = gross gains / gross losses of `return_pct` (None without losses);
- equity compounds prod(1 + r/100) in exit order from 1.0, each factor floored at 1e-12
  (a short can lose more than 100 %); max_drawdown_pct = largest fall from the running
  peak (the start counts as a peak), in percent; compounded_return_pct = (equity - 1) * 100.

The API computes the same figures in SQL for arbitrary filters (`api/db/performance.py`);
a test holds the two equal.
"""

from __future__ import annotations

import itertools
from typing import TypedDict

import numpy as np
import pandas as pd

from signalengine.core.vocabulary import FloatArray, IntArray

MIN_FACTOR = 1e-12

__all__ = ["MIN_FACTOR", "TradeStats", "exit_order", "max_drawdown_pct", "trade_statistics"]


class TradeStats(TypedDict):
    """The figures of one group of settled trades (see the module docstring)."""

    count: int
    wins: int
    losses: int
    expired: int
    win_rate: float | None
    avg_return_pct: float | None
    median_return_pct: float | None
    total_return_pct: float | None
    compounded_return_pct: float | None
    profit_factor: float | None
    sharpe: float | None
    max_drawdown_pct: float | None
    avg_duration_sec: float | None


def exit_order(trades: pd.DataFrame) -> pd.DataFrame:
    """Trades sorted by exit time, ties by signal id (stable where there is no id)."""
    rows = _exit_rows(trades)
    if rows is not None:
        return trades.take(rows)
    keys = ["exit_time", "signal_id"] if "signal_id" in trades else ["exit_time"]
    return trades.sort_values(keys, kind="stable")


def _exit_rows(trades: pd.DataFrame) -> IntArray | None:
    """`exit_order`'s row positions without pandas' sort by strings: a stable argsort of the
    exit times, then each run of equal times in signal id order (few trades share an exit
    minute). None, for pandas to sort, unless the times are datetimes without NaT and the
    tied ids are strings."""
    times = trades["exit_time"]
    if not pd.api.types.is_datetime64_any_dtype(times) or bool(times.isna().any()):
        return None
    ns = pd.DatetimeIndex(times).asi8
    rows = np.argsort(ns, kind="stable")
    if "signal_id" not in trades:
        return rows
    ordered = ns[rows]
    bounds = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True]).tolist()
    runs = [(a, b) for a, b in itertools.pairwise(bounds) if b - a > 1]
    if not runs:
        return rows
    tied = np.concatenate([rows[a:b] for a, b in runs])
    ids = trades["signal_id"].take(tied).tolist()
    if not all(isinstance(i, str) for i in ids):
        return None
    id_of = dict(zip(tied.tolist(), ids, strict=True))
    for a, b in runs:  # sorted() is stable: equal ids keep their order, as sort_values does
        rows[a:b] = sorted(rows[a:b].tolist(), key=id_of.__getitem__)
    return rows


def max_drawdown_pct(returns_pct: FloatArray) -> float:
    """Largest peak-to-trough fall of the compounded equity curve, in percent (>= 0)."""
    if returns_pct.size == 0:
        return 0.0
    equity = np.cumprod(np.maximum(1.0 + returns_pct / 100.0, MIN_FACTOR))
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    return float(np.max((peak - equity) / peak) * 100.0)


def trade_statistics(trades: pd.DataFrame) -> TradeStats:
    """The figures of `trades` (columns `outcome, return_pct, duration_sec, exit_time`)."""
    if trades.empty:
        return _NO_TRADES.copy()
    ordered = exit_order(trades)
    r = ordered["return_pct"].to_numpy(dtype=np.float64)
    n = int(r.size)
    wins = int((ordered["outcome"] == "tp_hit").sum())
    losses = int((ordered["outcome"] == "sl_hit").sum())
    gains, pains = float(r[r > 0].sum()), float(-r[r < 0].sum())
    std = float(np.std(r, ddof=1)) if n > 1 else 0.0
    log_equity = float(np.log(np.maximum(1.0 + r / 100.0, MIN_FACTOR)).sum())
    return {
        "count": n,
        "wins": wins,
        "losses": losses,
        "expired": n - wins - losses,
        "win_rate": wins / n,
        "avg_return_pct": float(r.mean()),
        "median_return_pct": float(np.median(r)),
        "total_return_pct": float(r.sum()),
        "compounded_return_pct": float(np.expm1(log_equity) * 100.0),
        "profit_factor": gains / pains if pains > 0 else None,
        "sharpe": float(r.mean()) / std if n > 1 and std > 0 else None,
        "max_drawdown_pct": max_drawdown_pct(r),
        "avg_duration_sec": float(ordered["duration_sec"].mean()),
    }


_NO_TRADES: TradeStats = {
    "count": 0,
    "wins": 0,
    "losses": 0,
    "expired": 0,
    "win_rate": None,
    "avg_return_pct": None,
    "median_return_pct": None,
    "total_return_pct": None,
    "compounded_return_pct": None,
    "profit_factor": None,
    "sharpe": None,
    "max_drawdown_pct": None,
    "avg_duration_sec": None,
}
