"""Settling open signals on stored 1m bars and writing `signal_performance`.

The rules are DESIGN §4, implemented once in `tasks.outcomes.settlement` and shared with the
backtest. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so two settle runs at once
never settle the same signal twice; re-running is harmless (nothing open is left).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from signalengine.core.db import DbConn
from signalengine.core.vocabulary import LIVE_RUN
from signalengine.tasks.marketdata.klines import load_bars
from signalengine.tasks.outcomes.settlement import PERFORMANCE_COLUMNS, settle_signals

_SIGNAL_FIELDS = (
    "id, run_id, exchange, symbol, direction, timeframe, entry_price, take_profit,"
    " stop_loss, emitted_at, expires_at, score, strategy"
)


def write_performance(conn: DbConn, rows: pd.DataFrame) -> int:
    """Insert performance rows and mark their signals settled; returns rows written."""
    if rows.empty:
        return 0
    columns = ", ".join(PERFORMANCE_COLUMNS)
    placeholders = ", ".join(["%s"] * len(PERFORMANCE_COLUMNS))
    records = [tuple(r) for r in rows[list(PERFORMANCE_COLUMNS)].itertuples(index=False)]
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO signal_performance ({columns}) VALUES ({placeholders})"
            " ON CONFLICT (signal_id) DO NOTHING",
            records,
        )
        cur.executemany(
            "UPDATE signals SET status = %s WHERE id = %s",
            [(o, i) for o, i in zip(rows["outcome"], rows["signal_id"], strict=True)],
        )
    return len(rows)


def settle_open(
    conn: DbConn,
    *,
    run_id: str = LIVE_RUN,
    fee_bps: float,
    slippage_bps: float,
) -> pd.DataFrame:
    """Settle every open signal of a run that can be settled now; returns the new rows."""
    settled: list[pd.DataFrame] = []
    with conn.transaction():
        claimed = conn.execute(
            f"SELECT {_SIGNAL_FIELDS} FROM signals WHERE status = 'open' AND run_id = %s"
            " ORDER BY exchange, symbol, emitted_at FOR UPDATE SKIP LOCKED",
            (run_id,),
        ).fetchall()
        if not claimed:
            return pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
        signals = pd.DataFrame(claimed)
        for (exchange, symbol), group in signals.groupby(["exchange", "symbol"], sort=False):
            bars = _bars_for(conn, group, exchange=str(exchange), symbol=str(symbol))
            if bars.empty:
                continue
            rows = settle_signals(group, bars, fee_bps=fee_bps, slippage_bps=slippage_bps)
            if not rows.empty:
                write_performance(conn, rows)
                settled.append(rows)
    if not settled:
        return pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    return pd.concat(settled, ignore_index=True)


def _bars_for(
    conn: DbConn,
    group: pd.DataFrame,
    *,
    exchange: str,
    symbol: str,
) -> pd.DataFrame:
    start = pd.Timestamp(group["emitted_at"].min())
    end = pd.Timestamp(group["expires_at"].max())
    return load_bars(
        conn, exchange=exchange, symbols=[symbol], timeframe="1m", start=start, end=end
    )[symbol]


def settlement_summary(rows: pd.DataFrame) -> dict[str, Any]:
    """Counts by outcome and the mean return of what was just settled."""
    counts = rows["outcome"].value_counts().to_dict() if not rows.empty else {}
    return {
        "settled": len(rows),
        "tp_hit": int(counts.get("tp_hit", 0)),
        "sl_hit": int(counts.get("sl_hit", 0)),
        "expired": int(counts.get("expired", 0)),
        "avg_return_pct": float(rows["return_pct"].mean()) if len(rows) else None,
    }
