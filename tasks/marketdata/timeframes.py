"""Timeframe relations on plain PostgreSQL: one table per timeframe, upkept by the writer.

Each higher timeframe is rebuilt, for the buckets a write touched, from the next smaller
configured timeframe (5m from 1m, 15m from 5m, 1h from 15m ...), inside the writer's
transaction, so a reader never sees a closed bucket that disagrees with `klines`.
Buckets made only of bars the write brought (`aggregate_new_bars`) are computed from
those bars instead, so a bulk import does not read its own rows back.

On TimescaleDB (core.timescale) the same relations are continuous aggregates that the
database keeps: the upkeep here does nothing there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from signalengine.core.bucket_sql import reduceat_sum_sql
from signalengine.core.migrate import upgrade
from signalengine.core.timescale import backend, ensure_timeframe_aggregates
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, source_timeframe, timeframe_relation
from signalengine.tasks.engine.buckets import MINUTE_NS, aggregate_buckets

# date_bin origin: buckets align to the Unix epoch in UTC (4h at 00/04/08 UTC, 1d at 00:00).
BUCKET_ORIGIN = "1970-01-01 00:00:00+00"


def ensure_timeframe_tables(conn: psycopg.Connection[Any], timeframes: list[str]) -> None:
    """Create the relation of any configured timeframe that no migration created."""
    if backend(conn).timescale:
        ensure_timeframe_aggregates(conn, timeframes)
        return
    for tf in timeframes:
        if tf == "1m":
            continue
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE klines_5m INCLUDING ALL)").format(
                sql.Identifier(timeframe_relation(tf))
            )
        )


def refresh_buckets(conn: psycopg.Connection[Any], timeframes: list[str], *, touched: str) -> None:
    """Recompute every bucket overlapping the ranges in the temp table `touched`.

    `touched` has columns `exchange, symbol, lo, hi` (1m bar open times, inclusive), at
    most one row per (exchange, symbol). A no-op on TimescaleDB. The volume is added in
    `np.add.reduceat`'s order (`reduceat_sum_sql`), so a bucket equals, bit for bit, the
    one the engine buckets from the same rows (`tasks.engine.buckets.aggregate_buckets`).
    Every timeframe is one statement, bottom-up; all go to the server in one round trip.
    """
    if backend(conn).timescale:
        return
    ordered = sorted((tf for tf in timeframes if tf != "1m"), key=TIMEFRAME_MINUTES.__getitem__)
    statements: list[sql.Composable] = []
    for tf in ordered:
        source = source_timeframe(tf, ordered)
        width = f"{TIMEFRAME_MINUTES[tf]} minutes"
        bars = sql.SQL("1") if source == "1m" else sql.SQL("s.bars")
        source_rel = sql.Identifier("klines" if source == "1m" else timeframe_relation(source))
        rows = TIMEFRAME_MINUTES[tf] // TIMEFRAME_MINUTES[source]  # at most, per bucket
        statement = sql.SQL(
            """
            INSERT INTO {target} AS t (exchange, symbol, ts, open, high, low, close, volume, bars)
            SELECT r.exchange, r.symbol, b.*
            FROM {touched} r
            -- LATERAL: one index range scan per range, whatever the (absent) statistics
            -- of the temp table and of freshly written timeframe tables make the planner think
            CROSS JOIN LATERAL (
                SELECT g.ts, g.a[1][1], g.high, g.low, g.a[g.n][2], {volume}, g.bars
                FROM (
                    -- one ordered aggregate: (open, close, volume) of each row, in time order
                    SELECT *, array_length(a, 1) AS n
                    FROM (
                        SELECT date_bin({width}::interval, s.ts, {origin}::timestamptz) AS ts,
                               array_agg(ARRAY[s.open, s.close, s.volume] ORDER BY s.ts) AS a,
                               max(s.high) AS high, min(s.low) AS low, sum({bars}) AS bars
                        FROM {source} s
                        WHERE s.exchange = r.exchange AND s.symbol = r.symbol
                          AND s.ts >= date_bin({width}::interval, r.lo, {origin}::timestamptz)
                          AND s.ts < date_bin({width}::interval, r.hi, {origin}::timestamptz)
                                     + {width}::interval
                        GROUP BY 1) agg) g) b
            ON CONFLICT (exchange, symbol, ts) DO UPDATE SET
                open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                close = EXCLUDED.close, volume = EXCLUDED.volume, bars = EXCLUDED.bars
            """
        ).format(
            target=sql.Identifier(timeframe_relation(tf)),
            width=sql.Literal(width),
            origin=sql.Literal(BUCKET_ORIGIN),
            bars=bars,
            touched=sql.Identifier(touched),
            source=source_rel,
            volume=sql.SQL(reduceat_sum_sql("g.a[{}][3]", "g.n", rows)),
        )
        statements.append(statement)
    if statements:  # in order, in one round trip (no parameters)
        conn.execute(sql.SQL(";").join(statements))


def aggregate_new_bars(bars: pd.DataFrame, timeframes: list[str]) -> dict[str, pd.DataFrame]:
    """Higher-timeframe buckets made only of `bars`, per configured timeframe above 1m.

    `bars` are 1m rows (`exchange, symbol, ts` UTC open time, `open .. volume`) with unique
    keys, written into a span where nothing was stored before: per (exchange, symbol), the
    span from its first to its last bar. A bucket wholly inside that span therefore holds
    these bars and nothing else, and is returned (columns `exchange, symbol, ts, open .. volume,
    bars`, `ts` = bucket open time, epoch-aligned like date_bin); buckets reaching past
    either end may hold stored bars too and are left to `refresh_buckets`. Each level is
    built from the one below (first open, max high, min low, last close, summed volume, bars).
    Empty (no key) when no span is long enough to hold a bucket of the smallest timeframe.
    """
    ordered = sorted((tf for tf in timeframes if tf != "1m"), key=TIMEFRAME_MINUTES.__getitem__)
    if bars.empty or not ordered:
        return {}
    ex_code, exchanges = pd.factorize(bars["exchange"])
    sym_code, symbols = pd.factorize(bars["symbol"])
    pair_code = ex_code.astype("int64") * len(symbols) + sym_code
    pairs, code = np.unique(pair_code, return_inverse=True)
    ts = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8
    first = np.full(len(pairs), np.iinfo("int64").max)
    last = np.full(len(pairs), np.iinfo("int64").min)
    np.minimum.at(first, code, ts)
    np.maximum.at(last, code, ts)
    if not np.any(last - first + MINUTE_NS >= TIMEFRAME_MINUTES[ordered[0]] * MINUTE_NS):
        return {}  # a live minute: every bucket reaches past its span
    order = np.lexsort((ts, code))
    level: dict[str, np.ndarray] = {"code": code[order], "ts": ts[order]}
    for column in ("open", "high", "low", "close", "volume"):
        level[column] = bars[column].to_numpy(dtype="float64")[order]
    level["bars"] = np.ones(len(order), dtype="int64")
    exchange_of = np.asarray(exchanges, dtype=object)[pairs // len(symbols)]
    symbol_of = np.asarray(symbols, dtype=object)[pairs % len(symbols)]

    levels = {"1m": level}
    result: dict[str, pd.DataFrame] = {}
    for tf in ordered:
        src = levels[source_timeframe(tf, [t for t in ordered if t in levels])]
        width = TIMEFRAME_MINUTES[tf] * MINUTE_NS
        levels[tf] = out = aggregate_buckets(src, width)
        inside = (out["ts"] >= first[out["code"]]) & (
            out["ts"] + width - MINUTE_NS <= last[out["code"]]
        )
        codes = out["code"][inside]
        frame = pd.DataFrame(
            {
                "exchange": exchange_of[codes],
                "symbol": symbol_of[codes],
                "ts": pd.to_datetime(out["ts"][inside], unit="ns", utc=True),
            }
        )
        for column in ("open", "high", "low", "close", "volume", "bars"):
            frame[column] = out[column][inside]
        result[tf] = frame
    return result


def upgrade_with_timeframes(url: str, timeframes: list[str]) -> list[str]:
    """Migrate (`core.migrate.upgrade`), then give every configured timeframe its relation."""
    applied = upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_timeframe_tables(conn, timeframes)
    return applied
