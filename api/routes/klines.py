"""GET /klines/{symbol}: bars of one configured timeframe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from signalengine.api.db.klines import latest_klines
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
    rows = await latest_klines(
        conn=conn, exchange=exchange, symbol=symbol, timeframe=timeframe, limit=limit
    )
    return KlineSeries(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        klines=[Kline.model_validate(row) for row in rows],
    )
