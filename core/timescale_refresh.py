"""Refreshing the aggregates after a write, so that no write ever fails because of it.

The write path (tasks.marketdata.klines.store_klines) on TimescaleDB:

1. Inside the write's transaction, `mark_pending` records the [lo, hi) of every
   (exchange, symbol) whose bars are older than PENDING_AFTER in `klines_pending`. From
   the commit on, the exact views (core.timescale_objects) serve those buckets from
   `klines`: a reader can never see a materialized bucket that misses these bars.
   Newer bars need no record: every refresh window ends at least SMALLEST_END_OFFSET
   behind now, so they land in the real-time part of every aggregate.
2. After the commit, `refresh_pending` refreshes that range through every aggregate,
   bottom-up (5m, then 15m from it, ...), then deletes its rows: the views are back on
   the aggregates, which now hold the bars.
3. Each refresh is one transaction (`buckets_per_batch: 0` where the server batches
   manual refreshes, 2.2x): batches of 10 buckets, newest first, committed one by one,
   cost a transaction and a planning of the whole source per 10 buckets (a year of 1h
   took 95 s that way) and expose half-refreshed states.
4. Busy is not an error. Writers take turns per aggregate (a session advisory lock, so
   two writers never collide), and a `LockNotAvailable` from a policy refreshing an
   overlapping window is retried with backoff for up to REFRESH_PATIENCE. A refresh that
   still cannot run, or fails, is logged and left: its rows stay pending (reads stay
   exact, only slower) and `sweep_pending` of the next writer, or `db upgrade`, refreshes
   them once their owner is gone or they are older than SWEEP_AFTER.

Correct at every instant, not eventually: a row is deleted only after a refresh chain
that started after it was committed has finished, so the aggregates hold its bars then.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from signalengine.core.retry import backoff_seconds
from signalengine.core.timescale_objects import (
    SMALLEST_END_OFFSET,
    aggregate_relation,
    aggregate_timeframes,
    end_offset,
    width,
)
from signalengine.core.vocabulary import TIMEFRAME_MINUTES

__all__ = [
    "PENDING_AFTER",
    "REFRESH_PATIENCE",
    "SWEEP_AFTER",
    "mark_pending",
    "mark_pending_ranges",
    "refresh_aggregates",
    "refresh_pending",
    "sweep_pending",
]

logger = logging.getLogger(__name__)
Connection = psycopg.Connection[Any]
# One smallest bucket of slack below the smallest end offset: a write transaction may
# take that long between recording and committing before a refresh could overtake it.
PENDING_AFTER = SMALLEST_END_OFFSET - timedelta(
    minutes=min(m for m in TIMEFRAME_MINUTES.values() if m > 1)
)
REFRESH_PATIENCE = timedelta(minutes=2)
SWEEP_AFTER = timedelta(minutes=10)
RETRY_BASE_SECONDS = 0.05
RETRY_CAP_SECONDS = 0.25
# Advisory-lock namespace of the per-aggregate refresh turn (the key is the width in min).
_REFRESH_LOCK = 7_334_120
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ATOMIC = '{"buckets_per_batch": 0}'
# Whether refresh_continuous_aggregate takes `options` (2.2x), per connection.
_HAS_OPTIONS: weakref.WeakKeyDictionary[Connection, bool] = weakref.WeakKeyDictionary()

Range = tuple[str, str, datetime, datetime]  # exchange, symbol, lo, hi (exclusive)


def mark_pending(conn: Connection, ranges: Sequence[Range]) -> list[int]:
    """Inside the write's transaction: record the ranges that may lie behind a refresh.

    A range counts when its first bar is older than PENDING_AFTER by the server's clock
    at this moment (close to the commit). Returns the ids recorded (maybe none).
    """
    if not ranges:
        return []
    columns = list(zip(*ranges, strict=True))
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "INSERT INTO klines_pending (exchange, symbol, lo, hi)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[],"
            " %s::timestamptz[]) AS r(exchange, symbol, lo, hi)"
            " WHERE r.lo < clock_timestamp() - %s::interval RETURNING id",
            [list(c) for c in columns] + [PENDING_AFTER],
        ).fetchall()
    return [int(r[0]) for r in rows]


def mark_pending_ranges(conn: Connection, *, ranges: sql.Composable) -> list[int]:
    """`mark_pending` for spans computed in the database, not sent as parameters.

    `ranges` is a query yielding (exchange, symbol, first, last): the first and last 1m
    bar open time (UTC) of each span, whose range is [first, last + 1 minute).
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            sql.SQL(
                "INSERT INTO klines_pending (exchange, symbol, lo, hi)"
                " SELECT r.exchange, r.symbol, r.lo, r.hi + interval '1 minute'"
                " FROM ({}) AS r(exchange, symbol, lo, hi)"
                " WHERE r.lo < clock_timestamp() - %s::interval RETURNING id"
            ).format(ranges),
            [PENDING_AFTER],
        ).fetchall()
    return [int(r[0]) for r in rows]


def _floor(ts: datetime, step: timedelta) -> datetime:
    return _EPOCH + ((ts - _EPOCH) // step) * step


def _server_now(conn: Connection) -> datetime:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _takes_options(conn: Connection) -> bool:
    known = _HAS_OPTIONS.get(conn)
    if known is None:
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname ="
                " 'refresh_continuous_aggregate' AND 'options' = ANY(proargnames))"
            ).fetchone()
        known = _HAS_OPTIONS[conn] = bool(row and row[0])
    return known


def _refresh_one(
    conn: Connection, timeframe: str, *, lo: datetime, hi: datetime, deadline: float
) -> bool:
    """One aggregate over [lo, hi): our turn first, then retry while a policy is busy."""
    key = TIMEFRAME_MINUTES[timeframe]
    options = sql.SQL(", options => {}::jsonb").format(sql.Literal(_ATOMIC))
    statement = sql.SQL(
        "CALL refresh_continuous_aggregate({}, {}::timestamptz, {}::timestamptz{})"
    ).format(
        sql.Literal(aggregate_relation(timeframe)),
        sql.Literal(lo),
        sql.Literal(hi),
        options if _takes_options(conn) else sql.SQL(""),
    )
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (_REFRESH_LOCK, key))
    try:
        attempt = 0
        while True:
            try:
                conn.execute(statement)
                return True
            except psycopg.errors.LockNotAvailable as busy:
                if time.monotonic() >= deadline:
                    logger.warning(
                        "%s busy for %s (%s); its pending ranges stay exact and are"
                        " refreshed later",
                        aggregate_relation(timeframe),
                        REFRESH_PATIENCE,
                        busy.diag.message_primary,
                    )
                    return False
                logger.debug("%s busy, retrying: %s", aggregate_relation(timeframe), busy)
                time.sleep(backoff_seconds(attempt, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS))
                attempt += 1
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_REFRESH_LOCK, key))


def refresh_aggregates(conn: Connection, *, start: datetime, end: datetime) -> bool:
    """Refresh every aggregate over the buckets overlapping [start, end), bottom-up.

    Needs an autocommit connection. Each window stops at that aggregate's
    `now - end_offset` (server clock), where its real-time part begins. Returns whether
    every level was refreshed; False leaves the rest to a later chain.
    """
    now = _server_now(conn)
    deadline = time.monotonic() + REFRESH_PATIENCE.total_seconds()
    for tf in aggregate_timeframes(conn):
        step = width(tf)
        lo = _floor(start, step)
        hi = min(
            _floor(end - timedelta(microseconds=1), step) + step,
            _floor(now - end_offset(tf), step),
        )
        if hi > lo and not _refresh_one(conn, tf, lo=lo, hi=hi, deadline=deadline):
            return False
    return True


@contextmanager
def _autocommit(conn: Connection) -> Iterator[None]:
    if conn.autocommit:
        yield
        return
    conn.autocommit = True
    try:
        yield
    finally:
        conn.autocommit = False


def _refresh_rows(conn: Connection, ids: list[int]) -> bool:
    """The chain over the merged range of these pending rows, then delete them."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT min(lo), max(hi) FROM klines_pending WHERE id = ANY(%s)", (ids,)
        ).fetchone()
    if row is None or row[0] is None:
        return True  # swept by someone else already
    if not refresh_aggregates(conn, start=row[0], end=row[1]):
        return False
    conn.execute("DELETE FROM klines_pending WHERE id = ANY(%s)", (ids,))
    return True


def sweep_pending(conn: Connection) -> int:
    """Refresh and delete pending rows left behind: their owner's session is gone, or
    they are older than SWEEP_AFTER (a write inside a caller's transaction, a refresh
    that gave up). Needs an autocommit connection; returns the rows swept."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT id FROM klines_pending p"
            " WHERE p.created_at < clock_timestamp() - %s::interval"
            " OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p.owner_pid)",
            (SWEEP_AFTER,),
        ).fetchall()
    ids = [int(r[0]) for r in rows]
    if ids and _refresh_rows(conn, ids):
        return len(ids)
    return 0


def refresh_pending(conn: Connection, ids: list[int]) -> bool:
    """After the write's commit: refresh its pending ranges, drop them, sweep leftovers.

    Runs only on an idle connection (autocommit, or idle outside a transaction: switched
    to autocommit for the call). Inside a caller's transaction nothing happens: the rows
    stay pending and a later sweep refreshes them. Never raises a database error; returns
    whether the ranges were refreshed. A broken connection is left for the caller to meet.
    """
    if not ids or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:
        with _autocommit(conn):
            done = _refresh_rows(conn, ids)
            if done:
                sweep_pending(conn)
    except psycopg.Error as error:
        logger.warning("aggregate refresh deferred, ranges stay pending: %s", error)
        return False
    return done
