"""Performance rollups from `signal_performance`: figures per run, strategy, symbol,
timeframe, direction.

The figures are `tasks.outcomes.stats.trade_statistics` (the one definition, also in the
README) over each group and window; `*` stands for "all" in a symbol, timeframe or
direction key. The strategy is never `*`: two strategies' trades are separate systems and
are never pooled. Windows select trades by exit time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from signalengine.core.db import DbConn
from signalengine.core.vocabulary import DEFAULT_STRATEGY
from signalengine.tasks.outcomes.stats import trade_statistics

WINDOWS_DAYS = (1, 7, 30, 0)  # 0 = all time
ALL = "*"
ROLLUP_COLUMNS = [
    "run_id",
    "strategy",
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
_FIGURES = ROLLUP_COLUMNS[ROLLUP_COLUMNS.index("count") :]


def _figures(trades: pd.DataFrame) -> dict[str, float | int | None]:
    """The rollup columns of `trade_statistics` for one group of trades."""
    stats = trade_statistics(trades)
    return {column: stats[column] for column in _FIGURES}  # type: ignore[literal-required]


def compute_rollups(performance: pd.DataFrame, *, now: pd.Timestamp) -> pd.DataFrame:
    """Rows for every (strategy, symbol, timeframe, direction) and their '*' totals (all
    symbols, timeframes, directions of one strategy), per window."""
    rows = []
    if performance.empty:
        return pd.DataFrame(columns=ROLLUP_COLUMNS)
    perf = performance.copy()
    if "strategy" not in perf.columns:
        perf["strategy"] = DEFAULT_STRATEGY
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
            for (run_id, strategy, symbol, timeframe, direction), trades in grouped.groupby(
                ["run_id", "strategy", *keys], sort=False
            ):
                rows.append(
                    {
                        "run_id": run_id,
                        "strategy": strategy,
                        "symbol": symbol,
                        "timeframe": timeframe,
                        "direction": direction,
                        "window_days": window,
                        **_figures(trades),
                    }
                )
    return pd.DataFrame(rows, columns=ROLLUP_COLUMNS)


def refresh_rollups(conn: DbConn, *, now: pd.Timestamp) -> pd.DataFrame:
    """Recompute the whole `performance_rollups` table in one transaction."""
    rows = conn.execute(
        "SELECT signal_id::text AS signal_id, run_id, strategy, symbol, timeframe, direction,"
        " outcome, return_pct, duration_sec, exit_time FROM signal_performance"
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
    """Each run's and strategy's all-time totals (every symbol, timeframe and direction):
    count, win rate, sharpe."""
    overall = rollups[
        (rollups["symbol"] == ALL)
        & (rollups["timeframe"] == ALL)
        & (rollups["direction"] == ALL)
        & (rollups["window_days"] == 0)
    ]
    columns = ["run_id", "strategy", "count", "win_rate", "sharpe"]
    return [{str(k): v for k, v in row.items()} for row in overall[columns].to_dict("records")]
