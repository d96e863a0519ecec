"""GET /features/{symbol}: the latest feature values of one timeframe."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pandas as pd
from fastapi import APIRouter, HTTPException, status

from signalengine.api.db.klines import closed_klines
from signalengine.api.deps import ConnDep, ExchangeQuery, SettingsDep, SymbolPath, TimeframeQuery
from signalengine.api.schemas import ErrorDetail, FeatureSnapshot
from signalengine.tasks.features import compute_features

router = APIRouter(prefix="/features", tags=["features"])

FEATURE_BARS = 500
_INPUT_COLUMNS = {"open", "high", "low", "close", "volume", "bars"}


def _latest_features(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Features of the last bar of `rows` (oldest first), via tasks.features (DESIGN §4)."""
    bars = pd.DataFrame(rows).set_index("ts")[["open", "high", "low", "close", "volume"]]
    bars.index = pd.DatetimeIndex(bars.index).tz_convert("UTC")
    last = compute_features(bars).iloc[-1]
    values: dict[str, float | None] = {}
    for name, value in last.items():
        if str(name) in _INPUT_COLUMNS:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        values[str(name)] = number if math.isfinite(number) else None
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
    rows = await closed_klines(
        conn=conn, exchange=exchange, symbol=symbol, timeframe=timeframe, limit=FEATURE_BARS
    )
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no closed bars for this symbol")
    values = await asyncio.to_thread(_latest_features, rows)
    return FeatureSnapshot(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        ts=rows[-1]["ts"],
        bars_used=len(rows),
        features=values,
    )
