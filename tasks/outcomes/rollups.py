"""Performance rollups from `signal_performance`.

Definitions (also in the README): win = `tp_hit`, loss = `sl_hit`; win_rate =
wins / count (expired trades count in the denominator); sharpe = mean / sample std of
per-trade `return_pct` (not annualized; null under two trades or zero spread);
profit_factor = gross gains / gross losses of `return_pct` (null without losses);
max_drawdown_pct = largest fall of the compounded equity prod(1 + r/100), ordered by
exit time, from its running peak, in percent. Windows select trades by exit time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from signalengine.core.db import DbConn

WINDOWS_DAYS = (1, 7, 30, 0)  # 0 = all time
ALL = "*"
ROLLUP_COLUMNS = [
    "run_id",
    "symbol",
    "timeframe",
    "direction",
    "window_days",
    "count",
    "wins",
    "losses",
    "expired",
    "win_rate",
    "avg_return_pct",
    "median_return_pct",
    "total_return_pct",
    "profit_factor",
    "sharpe",
    "max_drawdown_pct",
    "avg_duration_sec",
]


def max_drawdown_pct(returns_pct: np.ndarray) -> float:
    """Largest peak-to-trough fall of the compounded equity curve, in percent (>= 0)."""
    if returns_pct.size == 0:
        return 0.0
    equity = np.cumprod(1.0 + returns_pct / 100.0)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    return float(np.max((peak - equity) / peak) * 100.0)


def summarize(trades: pd.DataFrame) -> dict[str, float | int | None]:
    """The figures of one group of trades (rows of signal_performance)."""
    ordered = trades.sort_values("exit_time", kind="stable")
    r = ordered["return_pct"].to_numpy(dtype=np.float64)
    n = int(r.size)
    wins = int((ordered["outcome"] == "tp_hit").sum())
    losses = int((ordered["outcome"] == "sl_hit").sum())
    gains, pains = float(r[r > 0].sum()), float(-r[r < 0].sum())
    std = float(np.std(r, ddof=1)) if n > 1 else 0.0
    return {
        "count": n,
        "wins": wins,
        "losses": losses,
        "expired": n - wins - losses,
        "win_rate": wins / n if n else 0.0,
        "avg_return_pct": float(r.mean()) if n else 0.0,
        "median_return_pct": float(np.median(r)) if n else 0.0,
        "total_return_pct": float(r.sum()),
        "profit_factor": gains / pains if pains > 0 else None,
        "sharpe": float(r.mean()) / std if n > 1 and std > 0 else None,
        "max_drawdown_pct": max_drawdown_pct(r),
        "avg_duration_sec": float(ordered["duration_sec"].mean()) if n else 0.0,
    }


def compute_rollups(performance: pd.DataFrame, *, now: pd.Timestamp) -> pd.DataFrame:
    """Rows for every (symbol, timeframe, direction) and their '*' totals, per window."""
    rows = []
    if performance.empty:
        return pd.DataFrame(columns=ROLLUP_COLUMNS)
    perf = performance.copy()
    perf["exit_time"] = pd.to_datetime(perf["exit_time"], utc=True)
    keys = ["symbol", "timeframe", "direction"]
    for window in WINDOWS_DAYS:
        part = perf if window == 0 else perf[perf["exit_time"] > now - pd.Timedelta(days=window)]
        if part.empty:
            continue
        for mask in range(8):  # every subset of keys replaced by '*'
            grouped = part.copy()
            for bit, key in enumerate(keys):
                if mask & (1 << bit):
                    grouped[key] = ALL
            for (run_id, symbol, timeframe, direction), trades in grouped.groupby(
                ["run_id", *keys], sort=False
            ):
                rows.append(
                    {
                        "run_id": run_id,
                        "symbol": symbol,
                        "timeframe": timeframe,
                        "direction": direction,
                        "window_days": window,
                        **summarize(trades),
                    }
                )
    return pd.DataFrame(rows, columns=ROLLUP_COLUMNS)


def refresh_rollups(conn: DbConn, *, now: pd.Timestamp) -> pd.DataFrame:
    """Recompute the whole `performance_rollups` table in one transaction."""
    rows = conn.execute(
        "SELECT run_id, symbol, timeframe, direction, outcome, return_pct, duration_sec,"
        " exit_time FROM signal_performance"
    ).fetchall()
    rollups = compute_rollups(pd.DataFrame(rows), now=now)
    columns = ", ".join(ROLLUP_COLUMNS)
    placeholders = ", ".join(["%s"] * len(ROLLUP_COLUMNS))
    records = [
        tuple(None if (isinstance(v, float) and np.isnan(v)) else v for v in row)
        for row in rollups.itertuples(index=False)
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM performance_rollups")
        cur.executemany(
            f"INSERT INTO performance_rollups ({columns}) VALUES ({placeholders})", records
        )
    return rollups


def overall_figures(rollups: pd.DataFrame) -> list[dict[str, object]]:
    """Each run's all-time totals (every symbol, timeframe and direction): count, win rate,
    sharpe."""
    overall = rollups[
        (rollups["symbol"] == ALL)
        & (rollups["timeframe"] == ALL)
        & (rollups["direction"] == ALL)
        & (rollups["window_days"] == 0)
    ]
    columns = ["run_id", "count", "win_rate", "sharpe"]
    return [{str(k): v for k, v in row.items()} for row in overall[columns].to_dict("records")]
