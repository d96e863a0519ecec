"""GET /features/{symbol}: the latest feature values of one timeframe."""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, HTTPException, status

from signalengine.api.db.klines import latest_kline_columns, open_times
from signalengine.api.deps import ConnDep, ExchangeQuery, SettingsDep, SymbolPath, TimeframeQuery
from signalengine.api.schemas import ErrorDetail, FeatureSnapshot
from signalengine.tasks.engine.features import feature_arrays
from signalengine.tasks.marketdata.columnar import BarColumns

router = APIRouter(prefix="/features", tags=["features"])

FEATURE_BARS = 500


def _latest_features(cols: BarColumns) -> dict[str, float | None]:
    """Features of the last bar of `cols` (oldest first), via tasks.engine.features (DESIGN §4)."""
    v = cols.values
    feats = feature_arrays(v["high"], v["low"], v["close"], v["volume"])
    values: dict[str, float | None] = {}
    for name, series in feats.items():
        number = float(series[-1])
        values[name] = number if math.isfinite(number) else None
    return values


@router.get("/{symbol:path}", responses={404: {"model": ErrorDetail}})
async def features(
    conn: ConnDep,
    settings: SettingsDep,
    symbol: SymbolPath,
    timeframe: TimeframeQuery,
    exchange: ExchangeQuery = None,
) -> FeatureSnapshot:
    """Features of the last closed bar, computed from the last 500 closed bars."""
    timeframe = timeframe or settings.primary_timeframe
    exchange = exchange or settings.exchange
    cols = await latest_kline_columns(
        conn=conn,
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        limit=FEATURE_BARS,
        closed=True,
    )
    if not len(cols):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no closed bars for this symbol")
    values = await asyncio.to_thread(_latest_features, cols)
    return FeatureSnapshot(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        ts=open_times(cols)[-1],
        bars_used=len(cols),
        features=values,
    )
