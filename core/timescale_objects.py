"""The timeframe objects on TimescaleDB: continuous aggregates, the exact views over them.

Every higher timeframe has two relations there:

- `klines_<tf>_cagg`, a hierarchical real-time continuous aggregate (5m from `klines`, 15m
  from the 5m one, 1h from the 15m one ...), kept up to date by refreshes;
- `klines_<tf>`, the contract's name: a view returning the aggregate's buckets, except the
  buckets overlapping a range in `klines_pending`, which it computes from `klines` itself
  (volume added in `np.add.reduceat`'s order, core.bucket_sql; the aggregate's own
  buckets add with TimescaleDB's sum: sql/timescale/README.md).

Why the view: a continuous aggregate serves a materialized bucket as materialized until a
refresh processes the invalidation a late 1m bar logged, so between the write's commit
and the end of that refresh (or forever, if the writer dies in between) the aggregate is
wrong for that bucket. A writer that may land behind a refresh records its range in
`klines_pending` inside its own transaction (core.timescale_refresh), so from the very
snapshot that sees its bars, every reader of `klines_<tf>` gets those buckets computed
from the bars. Both arms use the same merged range per (exchange, symbol), so every
bucket comes from exactly one arm.

The merged ranges come from `klines_pending_ranges()`, a PL/pgSQL function declared to
return one row: planned inline, the pending table's default estimate made the planner
expect hundreds of ranges, cost the second arm over every chunk of `klines` far above
`jit_above_cost`, and JIT-compile thousands of functions on each read (37 s for a year
of 1h bars, 0.05 s without). Being STABLE, it reads with the calling query's snapshot.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from signalengine.core.bucket_sql import reduceat_sum_sql
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, source_timeframe, timeframe_relation

__all__ = [
    "END_OFFSET_BUCKETS",
    "SMALLEST_END_OFFSET",
    "aggregate_relation",
    "aggregate_timeframes",
    "end_offset",
    "ensure_exact_views",
    "ensure_timeframe_aggregates",
    "width",
]

Connection = psycopg.Connection[Any]

# Refreshes (policies and writers alike) stop END_OFFSET_BUCKETS buckets behind now, so
# live bars always land in the real-time part of every aggregate.
END_OFFSET_BUCKETS = 3
SMALLEST_END_OFFSET = END_OFFSET_BUCKETS * timedelta(
    minutes=min(m for m in TIMEFRAME_MINUTES.values() if m > 1)
)
_SUFFIX = "_cagg"

_CREATE_AGGREGATE = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {cagg}
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange, symbol, time_bucket({width}::interval, ts) AS ts,
       first(open, ts) AS open, max(high) AS high, min(low) AS low,
       last(close, ts) AS close, sum(volume) AS volume, {bars} AS bars
FROM {source} GROUP BY exchange, symbol, time_bucket({width}::interval, ts)
WITH NO DATA
"""

# One merged [lo, hi) per (exchange, symbol) of everything pending, used by both arms.
_MERGED = "SELECT * FROM klines_pending_ranges()"
_CREATE_RANGES = """
CREATE OR REPLACE FUNCTION klines_pending_ranges()
RETURNS TABLE (exchange text, symbol text, lo timestamptz, hi timestamptz)
LANGUAGE plpgsql STABLE ROWS 1 AS $ranges$
BEGIN
    RETURN QUERY SELECT p.exchange, p.symbol, min(p.lo), max(p.hi)
                 FROM klines_pending p GROUP BY p.exchange, p.symbol;
END
$ranges$
"""
_CREATE_VIEW = f"""
CREATE VIEW {{view}} AS
SELECT c.exchange, c.symbol, c.ts, c.open, c.high, c.low, c.close, c.volume, c.bars
FROM {{cagg}} c
WHERE NOT EXISTS (
    SELECT 1 FROM ({_MERGED}) s
    WHERE s.exchange = c.exchange AND s.symbol = c.symbol
      AND s.lo < c.ts + {{width}}::interval AND s.hi > c.ts)
UNION ALL
SELECT b.exchange, b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.bars
FROM ({_MERGED}) s
CROSS JOIN LATERAL (
    SELECT g.exchange, g.symbol, g.ts, g.open, g.high, g.low, g.close,
           {{volume}} AS volume, g.bars
    FROM (
        SELECT k.exchange, k.symbol, time_bucket({{width}}::interval, k.ts) AS ts,
               first(k.open, k.ts) AS open, max(k.high) AS high, min(k.low) AS low,
               last(k.close, k.ts) AS close, array_agg(k.volume ORDER BY k.ts) AS v,
               count(*)::integer AS bars
        FROM klines k
        WHERE k.exchange = s.exchange AND k.symbol = s.symbol
          AND k.ts >= time_bucket({{width}}::interval, s.lo)
          AND k.ts < time_bucket({{width}}::interval, s.hi - interval '1 microsecond')
                     + {{width}}::interval
        GROUP BY k.exchange, k.symbol, time_bucket({{width}}::interval, k.ts)) g) b
"""


def width(timeframe: str) -> timedelta:
    """The bucket width of a timeframe."""
    return timedelta(minutes=TIMEFRAME_MINUTES[timeframe])


def end_offset(timeframe: str) -> timedelta:
    """How far behind now an aggregate's refreshes stop (the rest is real-time)."""
    return END_OFFSET_BUCKETS * width(timeframe)


def aggregate_relation(timeframe: str) -> str:
    """The continuous aggregate behind `klines_<tf>`: `klines_<tf>_cagg`."""
    return f"{timeframe_relation(timeframe)}{_SUFFIX}"


def aggregate_timeframes(conn: Connection) -> list[str]:
    """Timeframes that have a continuous aggregate, smallest first."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = current_schema() AND view_name LIKE 'klines\\_%\\_cagg'"
        ).fetchall()
    found = [name.removeprefix("klines_").removesuffix(_SUFFIX) for (name,) in rows]
    known = [tf for tf in found if tf in TIMEFRAME_MINUTES]
    return sorted(known, key=TIMEFRAME_MINUTES.__getitem__)


def ensure_exact_views(conn: Connection) -> list[str]:
    """Create the exact view `klines_<tf>` of every aggregate that has none; returns those.

    Existing views are left alone (a changed definition comes with a migration), so the
    frequent upgrades of `import` and `stream` never take a lock readers would wait on.
    """
    created: list[str] = []
    with conn.cursor(row_factory=tuple_row) as cur:
        no_ranges = cur.execute(
            "SELECT to_regprocedure('klines_pending_ranges()') IS NULL"
        ).fetchone()
    if no_ranges and no_ranges[0] and aggregate_timeframes(conn):
        conn.execute(_CREATE_RANGES)
    for tf in aggregate_timeframes(conn):
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute("SELECT to_regclass(%s) IS NULL", (timeframe_relation(tf),))
            missing = row.fetchone()
        if not (missing and missing[0]):
            continue
        conn.execute(
            sql.SQL(_CREATE_VIEW).format(
                view=sql.Identifier(timeframe_relation(tf)),
                cagg=sql.Identifier(aggregate_relation(tf)),
                width=sql.Literal(f"{TIMEFRAME_MINUTES[tf]} minutes"),
                # numpy's order (core.bucket_sql), as the plain-PostgreSQL upkeep adds
                volume=sql.SQL(reduceat_sum_sql("g.v[{}]", "g.bars", TIMEFRAME_MINUTES[tf])),
            )
        )
        created.append(tf)
    return created


def ensure_timeframe_aggregates(conn: Connection, timeframes: list[str]) -> list[str]:
    """Create the aggregate (and exact view) of every configured timeframe that has none.

    Each new aggregate reads the largest existing one that divides it (4h from 1h, 1d from
    4h), like the migrated ones. Returns the timeframes whose aggregate was created.
    """
    available = aggregate_timeframes(conn)
    created: list[str] = []
    for tf in sorted(set(timeframes) - {"1m"}, key=TIMEFRAME_MINUTES.__getitem__):
        if tf in available:
            continue
        source = source_timeframe(tf, available)
        bars = sql.SQL("count(*)::integer") if source == "1m" else sql.SQL("sum(bars)::integer")
        conn.execute(
            sql.SQL(_CREATE_AGGREGATE).format(
                cagg=sql.Identifier(aggregate_relation(tf)),
                width=sql.Literal(f"{TIMEFRAME_MINUTES[tf]} minutes"),
                bars=bars,
                source=sql.Identifier("klines" if source == "1m" else aggregate_relation(source)),
            )
        )
        available = sorted([*available, tf], key=TIMEFRAME_MINUTES.__getitem__)
        created.append(tf)
    ensure_exact_views(conn)
    return created
