"""Loading stored history for backtests and writing backtest results back.

Reads go through the columnar path (tasks.marketdata.columnar); results are written with
COPY (text format: a few thousand rows per chunk, the JSON columns serialized once).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from signalengine.core.db import DbConn
from signalengine.tasks.engine.records import SIGNAL_COLUMNS
from signalengine.tasks.marketdata.columnar import read_bars
from signalengine.tasks.outcomes.settle import write_performance
from signalengine.tasks.outcomes.settlement import PERFORMANCE_COLUMNS
from signalengine.tasks.outcomes.signals import insert_signals

OHLCV = ["open", "high", "low", "close", "volume"]
_JSON_COLUMNS = frozenset({"events", "mtf_details", "features"})
_TIME_COLUMNS = frozenset({"ts", "emitted_at", "expires_at", "entry_time", "exit_time"})


def load_history(
    conn: DbConn,
    *,
    exchange: str,
    symbols: list[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> dict[str, pd.DataFrame]:
    """1m bars per symbol with open time in [start, end), OHLCV float columns."""
    return load_history_columns(conn, exchange=exchange, symbols=symbols, start=start, end=end)


def load_history_columns(
    conn: DbConn,
    *,
    exchange: str,
    symbols: list[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> dict[str, pd.DataFrame]:
    """Like `load_history`, indexed in ns (the engine's resolution: no conversion later)."""
    columns = read_bars(
        conn, exchange=exchange, symbols=symbols, timeframe="1m", start=start, end=end
    )
    return columns.frames(with_bars=False, unit="ns")


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


def clear_run(conn: DbConn, *, run_id: str) -> int:
    """Delete a run's signals (their outcomes cascade); returns rows deleted."""
    with conn.transaction():
        return conn.execute("DELETE FROM signals WHERE run_id = %s", (run_id,)).rowcount


def _cell(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS:
        return json.dumps(value)
    if isinstance(value, np.generic):  # numpy scalars (np.bool_ is no Python bool)
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if column in _TIME_COLUMNS:
        return pd.Timestamp(value).to_pydatetime()
    return value


def _copy_rows(conn: DbConn, table: str, columns: Sequence[str], rows: Iterable[Any]) -> int:
    written = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row([_cell(c, v) for c, v in zip(columns, row, strict=True)])
            written += 1
    return written


def store_results(conn: DbConn, *, signals: pd.DataFrame, performance: pd.DataFrame) -> int:
    """Append a chunk's signals (status already settled) and outcomes with COPY, in one
    transaction; returns signals written. The run's earlier rows must be cleared first
    (`clear_run`): COPY has no ON CONFLICT."""
    if signals.empty:
        return 0
    sig_rows = signals[list(SIGNAL_COLUMNS)].itertuples(index=False, name=None)
    perf_rows = performance[list(PERFORMANCE_COLUMNS)].itertuples(index=False, name=None)
    with conn.transaction():
        written = _copy_rows(conn, "signals", SIGNAL_COLUMNS, sig_rows)
        _copy_rows(conn, "signal_performance", PERFORMANCE_COLUMNS, perf_rows)
    return written


def load_markers(conn: DbConn, *, run_id: str, symbols: list[str]) -> pd.DataFrame:
    """A run's signals of `symbols` as the report's markers: symbol, direction,
    emitted_at (UTC), entry_price, ordered by emission."""
    rows = conn.execute(
        "SELECT symbol, direction, emitted_at, entry_price FROM signals"
        " WHERE run_id = %s AND symbol = ANY(%s) ORDER BY emitted_at, symbol",
        (run_id, symbols),
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["symbol", "direction", "emitted_at", "entry_price"])
    frame["emitted_at"] = pd.to_datetime(frame["emitted_at"], utc=True)
    return frame
