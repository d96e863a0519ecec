"""GET /klines/{symbol}: bars of one configured timeframe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from signalengine.api.db.klines import latest_kline_columns, open_times
from signalengine.api.deps import ConnDep, ExchangeQuery, SettingsDep, SymbolPath, TimeframeQuery
from signalengine.api.schemas import ErrorDetail, Kline, KlineSeries

router = APIRouter(prefix="/klines", tags=["klines"])

MAX_LIMIT = 5000


@router.get("/{symbol:path}", responses={404: {"model": ErrorDetail}})
async def klines(
    conn: ConnDep,
    settings: SettingsDep,
    symbol: SymbolPath,
    timeframe: TimeframeQuery,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
    exchange: ExchangeQuery = None,
) -> KlineSeries:
    """The newest `limit` bars, oldest first; the newest may still be forming (see `bars`)."""
    timeframe = timeframe or settings.primary_timeframe
    exchange = exchange or settings.exchange
    cols = await latest_kline_columns(
        conn=conn, exchange=exchange, symbol=symbol, timeframe=timeframe, limit=limit, closed=False
    )
    values = [cols.values[c].tolist() for c in ("open", "high", "low", "close", "volume")]
    rows = zip(open_times(cols), *values, cols.bars.tolist(), strict=True)
    return KlineSeries(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        klines=[
            Kline(ts=ts, open=o, high=h, low=lo, close=c, volume=v, bars=n)
            for ts, o, h, lo, c, v, n in rows
        ],
    )
