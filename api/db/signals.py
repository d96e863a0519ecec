"""Reads of `signals` (rows as dicts with the table's columns; times are UTC)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from signalengine.api.db import AsyncConn
from signalengine.core.vocabulary import LIVE_RUN

_COLUMNS = sql.SQL(
    "id, run_id, exchange, symbol, timeframe, direction, ts, emitted_at, entry_price,"
    " take_profit, stop_loss, expires_at, score, events, mtf_aligned, mtf_score, mtf_details,"
    " ai_probability, model_version, features, status, created_at, strategy, strategy_version"
)


@dataclass(frozen=True)
class SignalFilter:
    """Which signals to list; None means any."""

    run_id: str = LIVE_RUN
    symbol: str | None = None
    direction: str | None = None
    timeframe: str | None = None
    since: datetime | None = None
    exchange: str | None = None
    strategy: str | None = None


async def list_signals(
    *,
    conn: AsyncConn,
    where: SignalFilter,
    limit: int,
    offset: int = 0,
    before: tuple[datetime, UUID] | None = None,
) -> list[dict[str, Any]]:
    """Newest first by (emitted_at, id); `before` is a keyset cursor, `since` is inclusive."""
    clauses: list[sql.Composable] = [sql.SQL("run_id = %s")]
    params: list[Any] = [where.run_id]
    for column, value in (
        ("symbol", where.symbol),
        ("direction", where.direction),
        ("timeframe", where.timeframe),
        ("exchange", where.exchange),
        ("strategy", where.strategy),
    ):
        if value is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if where.since is not None:
        clauses.append(sql.SQL("emitted_at >= %s"))
        params.append(where.since)
    if before is not None:
        clauses.append(sql.SQL("(emitted_at, id) < (%s, %s)"))
        params.extend(before)
    query = sql.SQL(
        "SELECT {} FROM signals WHERE {} ORDER BY emitted_at DESC, id DESC LIMIT %s OFFSET %s"
    ).format(_COLUMNS, sql.SQL(" AND ").join(clauses))
    cur = await conn.execute(query, [*params, limit, offset])
    return await cur.fetchall()


async def get_signal(*, conn: AsyncConn, signal_id: UUID) -> dict[str, Any] | None:
    """One signal by id, or None."""
    query = sql.SQL("SELECT {} FROM signals WHERE id = %s").format(_COLUMNS)
    cur = await conn.execute(query, [signal_id])
    return await cur.fetchone()


async def get_signals_by_ids(*, conn: AsyncConn, ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    """Signals by id (missing ids are absent from the result)."""
    query = sql.SQL("SELECT {} FROM signals WHERE id = ANY(%s)").format(_COLUMNS)
    cur = await conn.execute(query, [ids])
    return {row["id"]: row for row in await cur.fetchall()}


async def signals_created_since(
    *, conn: AsyncConn, since: datetime, run_id: str = LIVE_RUN, limit: int
) -> list[dict[str, Any]]:
    """The newest `limit` signals stored after `since`, returned oldest first (created_at, id)."""
    query = sql.SQL(
        "SELECT * FROM (SELECT {} FROM signals WHERE run_id = %s AND created_at > %s"
        " ORDER BY created_at DESC, id DESC LIMIT %s) s ORDER BY created_at, id"
    ).format(_COLUMNS)
    cur = await conn.execute(query, [run_id, since, limit])
    return await cur.fetchall()


async def signals_page_since(
    *,
    conn: AsyncConn,
    since: datetime,
    after: tuple[datetime, UUID] | None,
    run_id: str = LIVE_RUN,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to `limit` signals stored after `since`, oldest first; `after` (created_at, id)
    of the previous page's last row continues from there (keyset paging)."""
    lower_ts, lower_id = after if after is not None else (since, None)
    query = sql.SQL(
        "SELECT {} FROM signals WHERE run_id = %s AND created_at > %s"
        " AND (%s::uuid IS NULL OR (created_at, id) > (%s::timestamptz, %s::uuid))"
        " ORDER BY created_at, id LIMIT %s"
    ).format(_COLUMNS)
    cur = await conn.execute(query, [run_id, since, lower_id, lower_ts, lower_id, limit])
    return await cur.fetchall()


async def count_signals(*, conn: AsyncConn, run_id: str = LIVE_RUN) -> int:
    """How many signals a run has."""
    cur = await conn.execute("SELECT count(*) AS n FROM signals WHERE run_id = %s", [run_id])
    row = await cur.fetchone()
    return int(row["n"]) if row else 0
