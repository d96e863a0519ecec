"""Timeframe relations on plain PostgreSQL: one table per timeframe, upkept by the writer.

Each higher timeframe is rebuilt, for the buckets a write touched, from the next smaller
configured timeframe (5m from 1m, 15m from 5m, 1h from 15m ...), inside the writer's
transaction, so a reader never sees a closed bucket that disagrees with `klines`.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from core.config import TIMEFRAME_MINUTES

# date_bin origin: buckets align to the Unix epoch in UTC (4h at 00/04/08 UTC, 1d at 00:00).
_ORIGIN = "1970-01-01 00:00:00+00"


def relation(timeframe: str) -> str:
    """The relation holding a timeframe's bars: klines_1m, klines_5m ..."""
    if timeframe not in TIMEFRAME_MINUTES:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    return f"klines_{timeframe}"


def _source(timeframe: str, timeframes: list[str]) -> str:
    """The largest configured smaller timeframe that divides this one (at worst 1m)."""
    minutes = TIMEFRAME_MINUTES[timeframe]
    divisors = [
        tf for tf in timeframes
        if TIMEFRAME_MINUTES[tf] < minutes and minutes % TIMEFRAME_MINUTES[tf] == 0
    ]
    return max(divisors, key=TIMEFRAME_MINUTES.__getitem__, default="1m")


def ensure_timeframe_tables(conn: psycopg.Connection, timeframes: list[str]) -> None:  # type: ignore[type-arg]
    """Create the table of any configured timeframe that no migration created."""
    for tf in timeframes:
        if tf == "1m":
            continue
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE klines_5m INCLUDING ALL)").format(
                sql.Identifier(relation(tf))
            )
        )


def refresh_buckets(conn: psycopg.Connection, timeframes: list[str], *, touched: str) -> None:  # type: ignore[type-arg]
    """Recompute every bucket overlapping the ranges in the temp table `touched`.

    `touched` has columns `exchange, symbol, lo, hi` (1m bar open times, inclusive).
    """
    ordered = sorted((tf for tf in timeframes if tf != "1m"), key=TIMEFRAME_MINUTES.__getitem__)
    for tf in ordered:
        source = _source(tf, ordered)
        width = f"{TIMEFRAME_MINUTES[tf]} minutes"
        bars = sql.SQL("1") if source == "1m" else sql.SQL("s.bars")
        source_rel = sql.Identifier("klines" if source == "1m" else relation(source))
        statement = sql.SQL(
            """
            INSERT INTO {target} AS t (exchange, symbol, ts, open, high, low, close, volume, bars)
            SELECT s.exchange, s.symbol, date_bin({width}::interval, s.ts, {origin}::timestamptz),
                   (array_agg(s.open ORDER BY s.ts))[1], max(s.high), min(s.low),
                   (array_agg(s.close ORDER BY s.ts DESC))[1], sum(s.volume), sum({bars})
            FROM {touched} r
            JOIN {source} s ON s.exchange = r.exchange AND s.symbol = r.symbol
             AND s.ts >= date_bin({width}::interval, r.lo, {origin}::timestamptz)
             AND s.ts < date_bin({width}::interval, r.hi, {origin}::timestamptz) + {width}::interval
            GROUP BY 1, 2, 3
            ON CONFLICT (exchange, symbol, ts) DO UPDATE SET
                open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                close = EXCLUDED.close, volume = EXCLUDED.volume, bars = EXCLUDED.bars
            """
        ).format(
            target=sql.Identifier(relation(tf)),
            width=sql.Literal(width),
            origin=sql.Literal(_ORIGIN),
            bars=bars,
            touched=sql.Identifier(touched),
            source=source_rel,
        )
        conn.execute(statement)
