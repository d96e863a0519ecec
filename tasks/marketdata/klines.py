"""Writing and reading klines (psycopg 3 binary COPY, one transaction per write).

Bars are 1-minute, keyed by (exchange, symbol, ts) with ts the UTC bar open time.
A re-sent identical bar is a duplicate (counted, harmless); a re-sent bar whose values
differ from the stored one is rejected and logged, never silently overwritten.

Every write first copies its bars into a session temp table (the stage), once; the span
of each (exchange, symbol), the checks and the writes into `klines` are then SQL over the
stage, so no per-symbol value travels as a query parameter. Two ways on, same result.
Appending (the usual case: live minutes, imports, backfills of empty ranges): when
nothing is stored yet between a symbol's first and last new bar, the stage goes straight
into `klines`, and the timeframe buckets lying wholly inside that span are computed from
the bars (tasks.marketdata.timeframes.aggregate_new_bars, while the stage is copied in;
skipped when no span is long enough to hold one) and copied too; only the bucket at each
end is recomputed in SQL. Merging (anything overlapping stored bars): conflicts to
`klines_rejected`, INSERT .. ON CONFLICT DO NOTHING, then every bucket of the touched
ranges is recomputed. A server without COPY (PGlite in the tests) gets the same stage
through batched INSERTs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.copy import LibpqWriter, QueuedLibpqWriter
from psycopg.rows import tuple_row

from signalengine.core.timescale import backend
from signalengine.core.timescale_refresh import mark_pending_ranges, refresh_pending
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, timeframe_relation
from signalengine.tasks.marketdata.columnar import read_bars
from signalengine.tasks.marketdata.copy_rows import (
    COPY_HEADER,
    COPY_TRAILER,
    binary_blocks,
    binary_copy_payload,
    epoch_us,
)
from signalengine.tasks.marketdata.timeframes import (
    BUCKET_ORIGIN,
    aggregate_new_bars,
    refresh_buckets,
)
from signalengine.tasks.marketdata.validation import ValidatedBatch

__all__ = [
    "COPY_BLOCK_ROWS",
    "INSERT_BATCH_ROWS",
    "PRICE_COLUMNS",
    "StoreResult",
    "binary_copy_payload",
    "insert_rejected",
    "last_stored_ts",
    "load_bars",
    "store_klines",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_STAGE = "_klines_stage"
_TOUCHED = "_klines_touched"
_SPANS = "_klines_spans"  # first and last staged bar per (exchange, symbol)
_MINUTE_US = 60_000_000
# The spans of a stage holding one bar per (exchange, symbol): the bar itself.
_SINGLE_SPANS = sql.SQL("SELECT exchange, symbol, ts, ts FROM {}").format(sql.Identifier(_STAGE))
PRICE_COLUMNS = ["open", "high", "low", "close", "volume"]
# Rows per binary COPY block: the next block is built while the server takes one in.
COPY_BLOCK_ROWS = 20_000
# Rows per INSERT when the server has no COPY (one array parameter per column).
INSERT_BATCH_ROWS = 5_000


@dataclass(frozen=True)
class StoreResult:
    """What one write did; `rejected` counts validation failures plus conflicting bars."""

    rows: int
    inserted: int
    duplicates: int
    rejected: int

    def as_dict(self) -> dict[str, int]:
        return {
            "rows_read": self.rows,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }


def _prepare_session(conn: psycopg.Connection[Any]) -> None:
    """The temp tables of this session, empty (one round trip: no parameters)."""
    ranges = "(exchange text, symbol text, lo timestamptz, hi timestamptz) ON COMMIT DELETE ROWS"
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE klines INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS;"
        f" CREATE TEMP TABLE IF NOT EXISTS {_TOUCHED} {ranges};"
        f" CREATE TEMP TABLE IF NOT EXISTS {_SPANS} {ranges};"
        # inside a caller's transaction an earlier write's rows are still there
        f" DELETE FROM {_STAGE}; DELETE FROM {_TOUCHED}; DELETE FROM {_SPANS}"
    )


def insert_rejected(
    conn: psycopg.Connection[Any],
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
            [
                (r["exchange"], r["symbol"], r["ts"], r["raw"], r["reason"], source)
                for r in rejected
            ],
        )


def _write_rows(
    conn: psycopg.Connection[Any],
    table: str,
    frame: pd.DataFrame,
    *,
    ints: tuple[str, ...] = (),
    meanwhile: Callable[[], _T] | None = None,
) -> _T | None:
    """Append `frame` (exchange, symbol, ts, open .. volume, *ints) to `table`.

    `meanwhile` runs while the server takes the rows in (with COPY, the data goes out from
    a writer thread), so client work overlaps server work; its result is returned.
    """
    columns = ["exchange", "symbol", "ts", *PRICE_COLUMNS, *ints]
    target = sql.SQL("{} ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    if backend(conn).copy:
        statement = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(target)
        blocks = binary_blocks(frame, floats=PRICE_COLUMNS, ints=ints, block_rows=COPY_BLOCK_ROWS)
        with conn.cursor() as cur:
            # a writer thread pays off from the second block on (a live minute is one)
            many = len(frame) > COPY_BLOCK_ROWS
            writer = QueuedLibpqWriter(cur) if many else LibpqWriter(cur)
            with cur.copy(statement, writer=writer) as copy:
                copy.write(COPY_HEADER)
                for block in blocks:  # the next block is built while the server takes one
                    copy.write(block)
                copy.write(COPY_TRAILER)
                return meanwhile() if meanwhile else None
    _insert_rows(conn, target, frame, ints=ints)
    return meanwhile() if meanwhile else None


def _insert_rows(
    conn: psycopg.Connection[Any],
    target: sql.Composed,
    frame: pd.DataFrame,
    *,
    ints: tuple[str, ...],
) -> None:
    columns = ["exchange", "symbol", "ts", *PRICE_COLUMNS, *ints]
    # No COPY: one INSERT per batch, each column one array parameter.
    types = ["text", "text", "bigint", *["float8"] * len(PRICE_COLUMNS), *["int4"] * len(ints)]
    arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in types)
    names = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(len(columns)))
    values: list[sql.Composable] = [sql.Identifier(f"c{i}") for i in range(len(columns))]
    values[2] = sql.SQL("timestamptz 'epoch' + c2 * interval '1 microsecond'")
    statement = sql.SQL("INSERT INTO {} SELECT {} FROM unnest({}) AS r({})").format(
        target, sql.SQL(", ").join(values), arrays, names
    )
    us = epoch_us(frame["ts"])
    with conn.cursor() as cur:
        for lo in range(0, len(frame), INSERT_BATCH_ROWS):
            part = frame.iloc[lo : lo + INSERT_BATCH_ROWS]
            params: list[list[Any]] = [
                part["exchange"].astype(str).tolist(),
                part["symbol"].astype(str).tolist(),
                us[lo : lo + INSERT_BATCH_ROWS].tolist(),
            ]
            params += [part[c].to_numpy(dtype="float64").tolist() for c in PRICE_COLUMNS]
            params += [part[c].to_numpy(dtype="int64").tolist() for c in ints]
            cur.execute(statement, params)


def _unique_bars(frame: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """`frame` without repeated (exchange, symbol, ts) keys, the first of each kept; and
    whether that leaves one bar per (exchange, symbol), as in a live minute."""
    ex_code, _ = pd.factorize(frame["exchange"], use_na_sentinel=False)
    sym_code, symbols = pd.factorize(frame["symbol"], use_na_sentinel=False)
    pairs = np.unique(ex_code.astype(np.int64) * len(symbols) + sym_code).size
    if pairs == len(frame):
        return frame, True  # nothing can repeat
    unique = frame.drop_duplicates(subset=["exchange", "symbol", "ts"], keep="first")
    return unique, pairs == len(unique)


def _may_hold_bucket(frame: pd.DataFrame, timeframes: list[str]) -> bool:
    """Whether some span could hold a whole bucket of the smallest of `timeframes`.

    Cheap and conservative: no (exchange, symbol) spans more than the whole batch does.
    """
    us = epoch_us(frame["ts"])
    smallest = min(TIMEFRAME_MINUTES[tf] for tf in timeframes)
    return int(us.max() - us.min()) >= (smallest - 1) * _MINUTE_US


def _stage_spans(conn: psycopg.Connection[Any], timeframes: list[str]) -> tuple[bool, bool]:
    """Fill `_SPANS` from the stage; (a stored bar lies inside some span, so the write must
    merge; some span reaches past the bucket of the widest of `timeframes` it starts in)."""
    crosses = _crosses_widest(timeframes)
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            sql.SQL(
                """
                WITH spans AS (
                    INSERT INTO {spans}
                    SELECT exchange, symbol, min(ts), max(ts) FROM {stage} GROUP BY 1, 2
                    RETURNING exchange, symbol, lo, hi)
                SELECT EXISTS (
                    SELECT 1 FROM spans r JOIN LATERAL (
                        SELECT 1 FROM klines k WHERE k.exchange = r.exchange
                        AND k.symbol = r.symbol AND k.ts BETWEEN r.lo AND r.hi LIMIT 1) k ON true),
                    coalesce((SELECT bool_or({crosses}) FROM spans), false)
                """
            ).format(spans=sql.Identifier(_SPANS), stage=sql.Identifier(_STAGE), crosses=crosses)
        ).fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1])


def _crosses_widest(timeframes: list[str]) -> sql.Composed:
    """SQL: the span (lo, hi) ends in a later bucket of the widest timeframe than it starts in."""
    widest = f"{max((TIMEFRAME_MINUTES[tf] for tf in timeframes), default=1)} minutes"
    return sql.SQL(
        "date_bin({w}::interval, lo, {o}::timestamptz)"
        " <> date_bin({w}::interval, hi, {o}::timestamptz)"
    ).format(w=sql.Literal(widest), o=sql.Literal(BUCKET_ORIGIN))


def _refresh_span_ends(
    conn: psycopg.Connection[Any], timeframes: list[str], *, crossing: bool
) -> None:
    """Recompute the buckets holding each span's first and last bar (they may hold others).

    One range per (exchange, symbol) and call, from `_SPANS`: a span inside one bucket of
    the largest timeframe is one range; otherwise (`crossing`, some span) its two ends go
    in two calls, never reading the bars in between.
    """
    crosses = _crosses_widest(timeframes)
    parts = [
        sql.SQL("SELECT exchange, symbol, lo, CASE WHEN {} THEN lo ELSE hi END FROM {}").format(
            crosses, sql.Identifier(_SPANS)
        )
    ]
    if crossing:
        parts.append(
            sql.SQL("SELECT exchange, symbol, hi, hi FROM {} WHERE {}").format(
                sql.Identifier(_SPANS), crosses
            )
        )
    for select in parts:
        conn.execute(
            sql.SQL("DELETE FROM {touched}; INSERT INTO {touched} {select}").format(
                touched=sql.Identifier(_TOUCHED), select=select
            )
        )
        refresh_buckets(conn, timeframes, touched=_TOUCHED)


def _append_single(conn: psycopg.Connection[Any], rows: int, higher: list[str]) -> bool:
    """`_append` for a stage of one bar per (exchange, symbol), in fewer round trips.

    Such a span is occupied exactly when its bar's key is stored, so the insert's own
    key check is the occupancy check: fewer rows inserted than staged (stored bars, or
    ones a concurrent writer is adding) roll the insert back and the write merges, as
    `_append` does on a UniqueViolation. No span holds a whole bucket above 1m.
    """
    stage = sql.Identifier(_STAGE)
    touched: sql.Composable = sql.SQL("")
    if higher:  # each bar is its own touched range
        touched = sql.SQL(", t AS (INSERT INTO {} SELECT exchange, symbol, ts, ts FROM {})")
        touched = touched.format(sql.Identifier(_TOUCHED), stage)
    with conn.transaction() as savepoint, conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            sql.SQL(
                "WITH ins AS (INSERT INTO klines SELECT * FROM {}"
                " ON CONFLICT (exchange, symbol, ts) DO NOTHING RETURNING 1){}"
                " SELECT count(*) FROM ins"
            ).format(stage, touched)
        ).fetchone()
        if row is None or int(row[0]) < rows:
            logger.debug("some bars are stored already; merging instead")
            raise psycopg.Rollback(savepoint)
        if higher:
            refresh_buckets(conn, higher, touched=_TOUCHED)
        return True
    return False


def _append(
    conn: psycopg.Connection[Any],
    higher: list[str],
    new_buckets: dict[str, pd.DataFrame],
    *,
    crossing: bool,
) -> bool:
    """Move the stage, whose spans hold nothing yet, into `klines`; with `higher` (the
    timeframes upkept here) also `new_buckets` and the buckets at the spans' ends. False,
    having written nothing, when bars arrived concurrently in a span."""
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("INSERT INTO klines SELECT * FROM {}").format(sql.Identifier(_STAGE))
            )
            if not higher:
                return True
            for tf, buckets in new_buckets.items():
                if not buckets.empty:
                    _write_rows(conn, timeframe_relation(tf), buckets, ints=("bars",))
            _refresh_span_ends(conn, higher, crossing=crossing)
    except psycopg.errors.UniqueViolation:
        logger.info("bars arrived concurrently in the same span; merging instead")
        return False
    return True


def _merge(
    conn: psycopg.Connection[Any],
    timeframes: list[str],
    *,
    source: str,
) -> tuple[int, int]:
    """Store the staged bars, which overlap stored ones; returns (inserted, conflicts)."""
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
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            f"""
            WITH ins AS (
                INSERT INTO klines SELECT * FROM {_STAGE}
                ON CONFLICT (exchange, symbol, ts) DO NOTHING
                RETURNING exchange, symbol, ts),
            touched AS (
                INSERT INTO {_TOUCHED}
                SELECT exchange, symbol, min(ts), max(ts) FROM ins GROUP BY exchange, symbol)
            SELECT count(*) FROM ins
            """
        ).fetchone()
    added = int(row[0]) if row else 0
    if added:
        refresh_buckets(conn, timeframes, touched=_TOUCHED)
    return added, conflicts


def store_klines(
    conn: psycopg.Connection[Any],
    batch: ValidatedBatch,
    *,
    timeframes: list[str],
    source: str = "ingest",
) -> StoreResult:
    """Store a validated batch in one transaction and bring the timeframe relations up to date.

    On TimescaleDB, bars old enough to lie behind a refresh are marked pending inside the
    write's transaction (the `klines_<tf>` views then compute their buckets from `klines`),
    and after the commit, unless the connection is inside a caller's transaction, that
    range is refreshed through every aggregate and unmarked. A busy or failing refresh is
    retried or left pending, never raised: the bars are stored either way
    (core.timescale_refresh).
    """
    frame = batch.valid
    pending: list[int] = []
    with conn.transaction():
        _prepare_session(conn)
        insert_rejected(conn, batch.rejected, source=source)
        if frame.empty:
            return StoreResult(len(batch.rejected), 0, 0, len(batch.rejected))
        unique, single = _unique_bars(frame)
        higher = [] if backend(conn).timescale else [tf for tf in timeframes if tf != "1m"]
        if single:
            _write_rows(conn, _STAGE, unique)
            appended = _append_single(conn, len(unique), higher)
            spans = _SINGLE_SPANS
        else:
            aggregate: Callable[[], dict[str, pd.DataFrame]] | None = None
            if higher and _may_hold_bucket(unique, higher):
                # speculative (a merge does not use it), computed while the stage goes in
                aggregate = partial(aggregate_new_bars, unique, higher)
            new_buckets = _write_rows(conn, _STAGE, unique, meanwhile=aggregate) or {}
            occupied, crossing = _stage_spans(conn, higher)
            appended = not occupied and _append(conn, higher, new_buckets, crossing=crossing)
            spans = sql.SQL("SELECT exchange, symbol, lo, hi FROM {}").format(
                sql.Identifier(_SPANS)
            )
        if appended:
            added, conflicts = len(unique), 0
        else:
            added, conflicts = _merge(conn, timeframes, source=source)
        if added and backend(conn).timescale and backend(conn).pending:
            pending = mark_pending_ranges(conn, ranges=spans)
    refresh_pending(conn, pending)
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
    conn: psycopg.Connection[Any],
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
    Read through the columnar path (tasks.marketdata.columnar: binary COPY into numpy).
    """
    columns = read_bars(
        conn,
        exchange=exchange,
        symbols=symbols,
        timeframe=timeframe,
        start=start,
        end=end,
        closed_by=closed_by,
    )
    return columns.frames()


def last_stored_ts(
    conn: psycopg.Connection[Any],
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
