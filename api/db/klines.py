"""Reads of the timeframe relations `klines_<tf>` (bar open times in UTC)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from psycopg import sql

from signalengine.api.db import AsyncConn
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, timeframe_relation
from signalengine.tasks.marketdata.columnar import BarColumns, read_latest_bars

_BAR_COLUMNS = sql.SQL("ts, open, high, low, close, volume, bars")


async def latest_klines(
    *, conn: AsyncConn, exchange: str, symbol: str, timeframe: str, limit: int
) -> list[dict[str, Any]]:
    """The newest `limit` bars (the forming one included), oldest first."""
    query = sql.SQL(
        "SELECT * FROM (SELECT {} FROM {} WHERE exchange = %s AND symbol = %s"
        " ORDER BY ts DESC LIMIT %s) k ORDER BY ts"
    ).format(_BAR_COLUMNS, sql.Identifier(timeframe_relation(timeframe)))
    cur = await conn.execute(query, [exchange, symbol, limit])
    return await cur.fetchall()


async def closed_klines(
    *, conn: AsyncConn, exchange: str, symbol: str, timeframe: str, limit: int
) -> list[dict[str, Any]]:
    """The newest `limit` closed bars, oldest first.

    A bucket [ts, ts + timeframe) is closed once the newest stored 1m bar closes at or
    after its end: only then can no later 1m bar change it.
    """
    query = sql.SQL(
        "SELECT * FROM (SELECT {} FROM {} WHERE exchange = %(exchange)s AND symbol = %(symbol)s"
        " AND ts + %(width)s <= (SELECT max(ts) + interval '1 minute' FROM klines"
        "  WHERE exchange = %(exchange)s AND symbol = %(symbol)s)"
        " ORDER BY ts DESC LIMIT %(limit)s) k ORDER BY ts"
    ).format(_BAR_COLUMNS, sql.Identifier(timeframe_relation(timeframe)))
    params = {
        "exchange": exchange,
        "symbol": symbol,
        "width": timedelta(minutes=TIMEFRAME_MINUTES[timeframe]),
        "limit": limit,
    }
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def latest_kline_columns(
    *, conn: AsyncConn, exchange: str, symbol: str, timeframe: str, limit: int, closed: bool
) -> BarColumns:
    """`latest_klines` (or, `closed`, `closed_klines`) through the columnar read path:
    numpy arrays from one row of binary arrays, no Python tuple per bar."""
    return await read_latest_bars(
        conn, exchange=exchange, symbol=symbol, timeframe=timeframe, limit=limit, closed=closed
    )


def open_times(columns: BarColumns) -> list[datetime]:
    """The bars' open times as UTC datetimes (what a row read returns)."""
    stamps = pd.DatetimeIndex(columns.ts_ns.view("datetime64[ns]")).tz_localize("UTC")
    return list(stamps.as_unit("us").to_pydatetime())
