"""Writing and reading klines (psycopg 3 binary COPY, one transaction per write).

Bars are 1-minute, keyed by (exchange, symbol, ts) with ts the UTC bar open time.
A re-sent identical bar is a duplicate (counted, harmless); a re-sent bar whose values
differ from the stored one is rejected and logged, never silently overwritten.

Two ways in, same result. Appending (the usual case: live minutes, imports, backfills of
empty ranges): when nothing is stored yet between a symbol's first and last new bar, the
bars are copied straight into `klines`, and the timeframe buckets lying wholly inside
that span are computed from them (tasks.marketdata.timeframes.aggregate_new_bars) and copied too;
only the bucket at each end is recomputed in SQL. Merging (anything overlapping stored
bars): staging table, conflicts to `klines_rejected`, INSERT .. ON CONFLICT DO NOTHING,
then every bucket of the touched ranges is recomputed. A server without COPY (PGlite in
the tests) gets the same rows through batched INSERTs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from psycopg.rows import tuple_row

from signalengine.core.timescale import backend
from signalengine.core.timescale_refresh import Range, mark_pending, refresh_pending
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, timeframe_relation
from signalengine.tasks.marketdata.columnar import read_bars
from signalengine.tasks.marketdata.timeframes import aggregate_new_bars, refresh_buckets
from signalengine.tasks.marketdata.validation import ValidatedBatch

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_STAGE = "_klines_stage"
_TOUCHED = "_klines_touched"
PRICE_COLUMNS = ["open", "high", "low", "close", "volume"]
# Rows per binary COPY block: the next block is built while the server takes one in.
COPY_BLOCK_ROWS = 20_000
# Rows per INSERT when the server has no COPY (one array parameter per column).
INSERT_BATCH_ROWS = 5_000
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds (binary timestamptz)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"


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
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE klines INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS"
    )
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_TOUCHED}"
        " (exchange text, symbol text, lo timestamptz, hi timestamptz) ON COMMIT DELETE ROWS"
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


def _epoch_us(ts: pd.Series) -> np.ndarray:
    """UTC microseconds since the Unix epoch."""
    return pd.DatetimeIndex(ts).as_unit("us").asi8


def _binary_blocks(
    frame: pd.DataFrame, *, floats: list[str], ints: tuple[str, ...], block_rows: int
) -> Iterator[bytes]:
    """Binary COPY rows (no header, no trailer), at most `block_rows` rows per block.

    One fixed-size numpy record layout per (exchange, symbol): every field is a 4-byte
    length then the value, big-endian; ts is microseconds since 2000-01-01 UTC.
    """
    ts_all = _epoch_us(frame["ts"]) - _PG_EPOCH_US
    values = {c: frame[c].to_numpy(dtype="float64") for c in floats}
    values |= {c: frame[c].to_numpy(dtype="int64") for c in ints}
    for key, rows in frame.groupby(["exchange", "symbol"], sort=False).indices.items():
        exchange, symbol = cast(tuple[str, str], key)
        ex, sym = str(exchange).encode(), str(symbol).encode()
        layout = [("n", ">i2"), ("le", ">i4"), ("ex", f"S{len(ex)}"), ("ls", ">i4")]
        layout += [("sym", f"S{len(sym)}"), ("lt", ">i4"), ("ts", ">i8")]
        layout += [x for c in floats for x in ((f"l_{c}", ">i4"), (c, ">f8"))]
        layout += [x for c in ints for x in ((f"l_{c}", ">i4"), (c, ">i4"))]
        for lo in range(0, len(rows), block_rows):
            part = rows[lo : lo + block_rows]
            out = np.empty(len(part), dtype=np.dtype(layout))
            out["n"] = 3 + len(floats) + len(ints)
            out["le"], out["ex"], out["ls"], out["sym"], out["lt"] = len(ex), ex, len(sym), sym, 8
            out["ts"] = ts_all[part]
            for column in floats:
                out[f"l_{column}"] = 8
                out[column] = values[column][part]
            for column in ints:
                out[f"l_{column}"] = 4
                out[column] = values[column][part]
            yield out.tobytes()


def binary_copy_payload(
    frame: pd.DataFrame, *, floats: list[str], ints: tuple[str, ...] = ()
) -> bytes:
    """`frame` as PostgreSQL binary COPY data: exchange, symbol, ts, *floats, *ints.

    `ts` is tz-aware UTC (sent to microseconds), floats float8, ints int4.
    """
    blocks = _binary_blocks(frame, floats=floats, ints=ints, block_rows=len(frame) or 1)
    return b"".join([_COPY_HEADER, *blocks, _COPY_TRAILER])


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
        blocks = _binary_blocks(frame, floats=PRICE_COLUMNS, ints=ints, block_rows=COPY_BLOCK_ROWS)
        with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
            copy.write(_COPY_HEADER)
            for block in blocks:  # the next block is built while the server takes this one
                copy.write(block)
            copy.write(_COPY_TRAILER)
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
    us = _epoch_us(frame["ts"])
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


def _spans(frame: pd.DataFrame) -> pd.DataFrame:
    """First and last bar open time per (exchange, symbol): columns exchange, symbol, lo, hi."""
    spans = frame.groupby(["exchange", "symbol"], sort=False)["ts"].agg(["min", "max"])
    return spans.reset_index().rename(columns={"min": "lo", "max": "hi"})


def _span_params(spans: pd.DataFrame, lo: str, hi: str) -> list[list[Any]]:
    return [
        spans["exchange"].astype(str).tolist(),
        spans["symbol"].astype(str).tolist(),
        [t.to_pydatetime() for t in spans[lo]],
        [t.to_pydatetime() for t in spans[hi]],
    ]


def _pending_ranges(spans: pd.DataFrame) -> list[Range]:
    """[first bar, last bar + 1 minute) per (exchange, symbol), for `klines_pending`."""
    minute = timedelta(minutes=1)
    return [
        (str(ex), str(sym), lo.to_pydatetime(), hi.to_pydatetime() + minute)
        for ex, sym, lo, hi in spans[["exchange", "symbol", "lo", "hi"]].itertuples(index=False)
    ]


def _spans_occupied(conn: psycopg.Connection[Any], spans: pd.DataFrame) -> bool:
    """Whether any stored bar lies inside a span (then the write must merge)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT EXISTS (SELECT 1 FROM unnest(%s::text[], %s::text[], %s::timestamptz[],"
            " %s::timestamptz[]) AS r(exchange, symbol, lo, hi)"
            " JOIN LATERAL (SELECT 1 FROM klines k WHERE k.exchange = r.exchange"
            "  AND k.symbol = r.symbol AND k.ts BETWEEN r.lo AND r.hi LIMIT 1) k ON true)",
            _span_params(spans, "lo", "hi"),
        ).fetchone()
    return bool(row and row[0])


def _refresh_span_ends(
    conn: psycopg.Connection[Any],
    spans: pd.DataFrame,
    timeframes: list[str],
) -> None:
    """Recompute the buckets holding each span's first and last bar (they may hold others).

    One range per (exchange, symbol) and call: a span inside one bucket of the largest
    timeframe is one range; otherwise its two ends go in two calls, never reading the
    bars in between.
    """
    widest = pd.Timedelta(minutes=max(TIMEFRAME_MINUTES[tf] for tf in timeframes))
    same = spans["lo"].dt.floor(widest) == spans["hi"].dt.floor(widest)
    firsts = spans.assign(hi=spans["hi"].where(same, spans["lo"]))
    rest = spans[~same]
    for part in (firsts, rest.assign(lo=rest["hi"])):
        if part.empty:
            continue
        conn.execute(f"DELETE FROM {_TOUCHED}")
        conn.execute(
            f"INSERT INTO {_TOUCHED} SELECT * FROM unnest(%s::text[], %s::text[],"
            " %s::timestamptz[], %s::timestamptz[])",
            _span_params(part, "lo", "hi"),
        )
        refresh_buckets(conn, timeframes, touched=_TOUCHED)


def _append(
    conn: psycopg.Connection[Any],
    unique: pd.DataFrame,
    spans: pd.DataFrame,
    timeframes: list[str],
) -> bool:
    """Store bars whose spans hold nothing yet; False, having written nothing, otherwise."""
    if _spans_occupied(conn, spans):
        return False
    try:
        with conn.transaction():
            higher = [tf for tf in timeframes if tf != "1m"]
            if not higher or backend(conn).timescale:
                _write_rows(conn, "klines", unique)
                return True
            by_timeframe = _write_rows(
                conn, "klines", unique, meanwhile=lambda: aggregate_new_bars(unique, higher)
            )
            for tf, buckets in (by_timeframe or {}).items():
                _write_rows(conn, timeframe_relation(tf), buckets, ints=("bars",))
            _refresh_span_ends(conn, spans, higher)
    except psycopg.errors.UniqueViolation:
        logger.info("bars arrived concurrently in the same span; merging instead")
        return False
    return True


def _merge(
    conn: psycopg.Connection[Any],
    unique: pd.DataFrame,
    timeframes: list[str],
    *,
    source: str,
) -> tuple[int, int]:
    """Store bars overlapping stored ones; returns (inserted, conflicts)."""
    _write_rows(conn, _STAGE, unique)
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
        unique = frame.drop_duplicates(subset=["exchange", "symbol", "ts"], keep="first")
        spans = _spans(unique)
        if _append(conn, unique, spans, timeframes):
            added, conflicts = len(unique), 0
        else:
            added, conflicts = _merge(conn, unique, timeframes, source=source)
        if added and backend(conn).timescale and backend(conn).pending:
            pending = mark_pending(conn, _pending_ranges(spans))
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
