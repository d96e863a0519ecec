"""Loading stored history for backtests and writing backtest results back."""

from __future__ import annotations

import pandas as pd

from signalengine.core.db import DbConn
from signalengine.tasks.marketdata.klines import load_bars
from signalengine.tasks.outcomes.settle import write_performance
from signalengine.tasks.outcomes.signals import insert_signals

OHLCV = ["open", "high", "low", "close", "volume"]


def load_history(
    conn: DbConn,
    *,
    exchange: str,
    symbols: list[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> dict[str, pd.DataFrame]:
    """1m bars per symbol with open time in [start, end), OHLCV float columns."""
    frames = load_bars(
        conn, exchange=exchange, symbols=symbols, timeframe="1m", start=start, end=end
    )
    return {symbol: frame[OHLCV] for symbol, frame in frames.items()}


def store_backtest(
    conn: DbConn,
    *,
    run_id: str,
    signals: pd.DataFrame,
    performance: pd.DataFrame,
) -> int:
    """Replace a run's rows with these signals and outcomes; returns signals written."""
    with conn.transaction():
        conn.execute("DELETE FROM signals WHERE run_id = %s", (run_id,))
        written = insert_signals(conn, signals)
        write_performance(conn, performance)
    return written
