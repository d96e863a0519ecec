"""Loading stored history for backtests and writing backtest results back.

Reads go through the columnar path (tasks.marketdata.columnar); results are written with
COPY (text format: a few thousand rows per chunk, the JSON columns serialized once).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

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


_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text_cells(column: str, values: pd.Series) -> list[str]:
    """One column as COPY text cells, formatted column-wise (no per-row pandas access).

    Times go out as ISO microseconds in UTC, floats as Python's shortest round-trip repr
    (PostgreSQL reads them back bit for bit), JSON once per value; NULL is \\N.
    """
    if column in _JSON_COLUMNS:
        return [json.dumps(v).translate(_ESCAPES) for v in values.tolist()]
    if column in _TIME_COLUMNS:
        stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("us")
        text = np.datetime_as_string(stamps.asi8.view("datetime64[us]"), unit="us")
        missing = np.asarray(stamps.isna())
        return [_NULL if m else f"{t}Z" for t, m in zip(text.tolist(), missing, strict=True)]
    if values.dtype == np.bool_:
        return ["t" if v else "f" for v in values.tolist()]
    if pd.api.types.is_float_dtype(values.dtype):
        floats = values.to_numpy(dtype=np.float64)
        return [_NULL if f != f else repr(f) for f in floats.tolist()]
    out: list[str] = []
    for v in values.astype(object).tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(_NULL)
        elif isinstance(v, float):
            out.append(repr(v))
        else:
            out.append(str(v).translate(_ESCAPES))
    return out


def _copy_frame(conn: DbConn, table: str, columns: Sequence[str], frame: pd.DataFrame) -> int:
    """COPY `frame`'s `columns` into `table` in text format, as one block of lines."""
    if frame.empty:
        return 0
    columns = [c for c in columns if c in frame.columns]  # left out: the table's default
    cells = [_text_cells(c, frame[c]) for c in columns]
    block = "".join("\t".join(row) + "\n" for row in zip(*cells, strict=True))
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(block.encode())
    return len(frame)


def store_results(conn: DbConn, *, signals: pd.DataFrame, performance: pd.DataFrame) -> int:
    """Append a chunk's signals (status already settled) and outcomes with COPY, in one
    transaction; returns signals written. The run's earlier rows must be cleared first
    (`clear_run`): COPY has no ON CONFLICT."""
    if signals.empty:
        return 0
    with conn.transaction():
        written = _copy_frame(conn, "signals", SIGNAL_COLUMNS, signals)
        _copy_frame(conn, "signal_performance", PERFORMANCE_COLUMNS, performance)
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
