"""Emptying a test database between tests: the data tables and every timeframe relation."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

# Tables tests write into (besides the timeframe relations, found at run time).
DATA_TABLES = (
    "klines",
    "klines_rejected",
    "signals",
    "signal_performance",
    "feature_importance",
    "performance_rollups",
    "stream_watermarks",
    "symbol_controls",
    "strategy_checks",
    "strategy_overrides",
    # what /health reads: a stopped stream's row turns stale and makes the next test's
    # API `degraded`, whatever order (or xdist process) the files run in
    "stream_health",
    "ai_filter_health",
)


def timeframe_relations(conn: psycopg.Connection[Any]) -> list[str]:
    """Everything holding timeframe bars that TRUNCATE can empty, whatever the backend.

    Plain tables `klines_<tf>` (4h and 1d included when a test created them) and, on
    TimescaleDB, the continuous aggregates `klines_<tf>_cagg` (truncating one also resets
    its watermark) and `klines_pending`; the `klines_<tf>` views there hold nothing.
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
            " AND c.relname ~ '^klines_([0-9]+[mhdw]|pending)$'"
        ).fetchall()
        names = [r[0] for r in rows]
        timescale = cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        ).fetchone()
        if timescale and timescale[0]:
            names += [
                r[0]
                for r in cur.execute(
                    "SELECT view_name FROM timescaledb_information.continuous_aggregates"
                    " WHERE view_schema = current_schema()"
                ).fetchall()
            ]
    return sorted(names)


def empty_database(conn: psycopg.Connection[Any], tables: tuple[str, ...] = DATA_TABLES) -> None:
    """TRUNCATE the data tables and every timeframe relation (autocommit connection)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        present = [
            name
            for name in tables
            if (row := cur.execute("SELECT to_regclass(%s)", (name,)).fetchone()) and row[0]
        ]
    targets = [*present, *timeframe_relations(conn)]
    conn.execute(
        sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, targets)))
    )
