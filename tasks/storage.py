"""Writing and reading klines (psycopg 3 COPY into a staging table, then one INSERT).

Bars are 1-minute, keyed by (exchange, symbol, ts) with ts the UTC bar open time.
A re-sent identical bar is a duplicate (counted, harmless); a re-sent bar whose values
differ from the stored one is rejected and logged, never silently overwritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg

from tasks.timeframes import refresh_buckets, relation
from tasks.validation import KLINE_COLUMNS, ValidatedBatch

logger = logging.getLogger(__name__)

_STAGE = "_klines_stage"
_TOUCHED = "_klines_touched"


@dataclass(frozen=True)
class StoreResult:
    """What one write did; `rejected` counts validation failures plus conflicting bars."""

    rows: int
    inserted: int
    duplicates: int
    rejected: int

    def as_dict(self) -> dict[str, int]:
        return {"rows_read": self.rows, "inserted": self.inserted,
                "duplicates": self.duplicates, "rejected": self.rejected}


def _prepare_session(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE klines INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS"
    )
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_TOUCHED}"
        " (exchange text, symbol text, lo timestamptz, hi timestamptz) ON COMMIT DELETE ROWS"
    )


def insert_rejected(
    conn: psycopg.Connection,  # type: ignore[type-arg]
    rejected: list[dict[str, Any]],
    *,
    source: str,
) -> None:
    """Record refused rows with their raw content and reason."""
    if not rejected:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO klines_rejected (exchange, symbol, ts, raw, reason, source)"
            " VALUES (%s, %s, %s, %s::jsonb, %s, %s)",
            [(r["exchange"], r["symbol"], r["ts"], r["raw"], r["reason"], source)
             for r in rejected],
        )


def _copy_stage(conn: psycopg.Connection, frame: pd.DataFrame) -> None:  # type: ignore[type-arg]
    with conn.cursor() as cur, cur.copy(
        f"COPY {_STAGE} ({', '.join(KLINE_COLUMNS)}) FROM STDIN"
    ) as copy:
        for row in frame.itertuples(index=False, name=None):
            copy.write_row(row)


def store_klines(
    conn: psycopg.Connection,  # type: ignore[type-arg]
    batch: ValidatedBatch,
    *,
    timeframes: list[str],
    source: str = "ingest",
) -> StoreResult:
    """Store a validated batch in one transaction and bring the timeframe tables up to date."""
    frame = batch.valid
    with conn.transaction():
        _prepare_session(conn)
        insert_rejected(conn, batch.rejected, source=source)
        if frame.empty:
            return StoreResult(len(batch.rejected), 0, 0, len(batch.rejected))
        unique = frame.drop_duplicates(subset=["exchange", "symbol", "ts"], keep="first")
        _copy_stage(conn, unique)
        conflicts = conn.execute(
            f"""
            INSERT INTO klines_rejected (exchange, symbol, ts, raw, reason, source)
            SELECT s.exchange, s.symbol, s.ts, to_jsonb(s), 'differs from the stored bar', %s
            FROM {_STAGE} s JOIN klines k USING (exchange, symbol, ts)
            WHERE (k.open, k.high, k.low, k.close, k.volume)
                  IS DISTINCT FROM (s.open, s.high, s.low, s.close, s.volume)
            """,
            (source,),
        ).rowcount
        row = conn.execute(
            f"""
            WITH ins AS (
                INSERT INTO klines SELECT * FROM {_STAGE}
                ON CONFLICT (exchange, symbol, ts) DO NOTHING
                RETURNING exchange, symbol, ts),
            touched AS (
                INSERT INTO {_TOUCHED}
                SELECT exchange, symbol, min(ts), max(ts) FROM ins GROUP BY exchange, symbol)
            SELECT count(*) AS n FROM ins
            """
        ).fetchone()
        added = int(row["n"] if isinstance(row, dict) else row[0]) if row else 0
        if added:
            refresh_buckets(conn, timeframes, touched=_TOUCHED)
    duplicates = len(frame) - added - conflicts
    if conflicts:
        logger.warning("rejected %d klines that differ from stored bars (%s)", conflicts, source)
    return StoreResult(
        rows=len(frame) + len(batch.rejected),
        inserted=added,
        duplicates=duplicates,
        rejected=len(batch.rejected) + conflicts,
    )


def load_bars(
    conn: psycopg.Connection,  # type: ignore[type-arg]
    *,
    exchange: str,
    symbols: list[str],
    timeframe: str,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    closed_by: pd.Timestamp | None = None,
) -> dict[str, pd.DataFrame]:
    """Bars per symbol, indexed by UTC open time, columns open high low close volume bars.

    `start`/`end` bound the open time ([start, end)); `closed_by` keeps only buckets whose
    close time (open + timeframe) is at or before it, so an open bucket is never used.
    """
    from core.config import TIMEFRAME_MINUTES

    width = pd.Timedelta(minutes=TIMEFRAME_MINUTES[timeframe])
    upper = end
    if closed_by is not None:
        limit = closed_by - width + pd.Timedelta(microseconds=1)
        upper = limit if upper is None else min(upper, limit)
    query = (
        f"SELECT symbol, ts, open, high, low, close, volume, bars FROM {relation(timeframe)}"
        " WHERE exchange = %(exchange)s AND symbol = ANY(%(symbols)s)"
        " AND (%(start)s::timestamptz IS NULL OR ts >= %(start)s)"
        " AND (%(upper)s::timestamptz IS NULL OR ts < %(upper)s)"
        " ORDER BY symbol, ts"
    )
    params = {"exchange": exchange, "symbols": symbols, "start": start, "upper": upper}
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    columns = ["symbol", "ts", "open", "high", "low", "close", "volume", "bars"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    result: dict[str, pd.DataFrame] = {}
    for symbol in symbols:
        part = frame[frame["symbol"] == symbol].drop(columns="symbol").set_index("ts")
        result[symbol] = part.astype("float64")
    return result


def last_stored_ts(
    conn: psycopg.Connection,  # type: ignore[type-arg]
    *,
    exchange: str,
    symbol: str,
) -> pd.Timestamp | None:
    """Open time of the newest stored 1m bar, the resume point after a restart."""
    row = conn.execute(
        "SELECT max(ts) AS ts FROM klines WHERE exchange = %s AND symbol = %s",
        (exchange, symbol),
    ).fetchone()
    value = None if row is None else (row["ts"] if isinstance(row, dict) else row[0])
    return None if value is None else pd.Timestamp(value)
