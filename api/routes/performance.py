"""GET /performance/...: statistics of settled signals and model feature importance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from signalengine.api.db.models import latest_decision
from signalengine.api.db.performance import (
    PerformanceFilter,
    equity_curve,
    latest_feature_importance,
)
from signalengine.api.deps import (
    TEXT_PATTERN,
    CacheDep,
    ConnDep,
    ExchangeFilter,
    RunIdQuery,
    StrategyQuery,
    SymbolQuery,
    TimeframeQuery,
)
from signalengine.api.schemas import (
    Direction,
    EquityCurve,
    EquityPoint,
    FeatureImportance,
    ModelDecision,
    PerformanceStats,
    StrategyPerformance,
    SymbolPerformance,
)
from signalengine.api.stats import performance_stats, strategy_performance, symbol_performance
from signalengine.core.vocabulary import LIVE_RUN

router = APIRouter(prefix="/performance", tags=["performance"])

MAX_LOOKBACK_DAYS = 3650
LookbackQuery = Annotated[
    float | None,
    Query(gt=0, le=MAX_LOOKBACK_DAYS, description="Only signals that exited in the last N days."),
]


def _since(lookback_days: float | None) -> datetime | None:
    """now - lookback, floored to the minute so that answers can be cached for a minute."""
    if lookback_days is None:
        return None
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(days=lookback_days)


def _filter(
    run_id: str,
    symbol: str | None,
    timeframe: str | None,
    direction: str | None,
    lookback_days: float | None,
    strategy: str | None = None,
    exchange: str | None = None,
) -> PerformanceFilter:
    return PerformanceFilter(
        run_id=run_id,
        symbol=symbol,
        timeframe=timeframe,
        direction=direction,
        since=_since(lookback_days),
        exchange=exchange,
        strategy=strategy,
    )


@router.get("/stats")
async def stats(
    conn: ConnDep,
    cache: CacheDep,
    symbol: SymbolQuery,
    timeframe: TimeframeQuery,
    direction: Direction | None = None,
    lookback_days: LookbackQuery = None,
    run_id: RunIdQuery = LIVE_RUN,
    strategy: StrategyQuery = None,
    exchange: ExchangeFilter = None,
) -> PerformanceStats:
    """Win rate, returns, profit factor, Sharpe and drawdown of settled signals (of one
    strategy with `strategy`; `/performance/by-strategy` compares them)."""
    where = _filter(
        run_id, symbol, timeframe, direction, lookback_days, strategy, exchange=exchange
    )
    return await performance_stats(conn=conn, cache=cache, where=where, lookback_days=lookback_days)


@router.get("/by-symbol")
async def by_symbol(
    conn: ConnDep,
    cache: CacheDep,
    timeframe: TimeframeQuery,
    direction: Direction | None = None,
    lookback_days: LookbackQuery = None,
    run_id: RunIdQuery = LIVE_RUN,
    strategy: StrategyQuery = None,
) -> list[SymbolPerformance]:
    """Win rate and returns per symbol."""
    where = _filter(run_id, None, timeframe, direction, lookback_days, strategy)
    return await symbol_performance(conn=conn, cache=cache, where=where)


@router.get("/by-strategy")
async def by_strategy(
    conn: ConnDep,
    cache: CacheDep,
    symbol: SymbolQuery,
    timeframe: TimeframeQuery,
    direction: Direction | None = None,
    lookback_days: LookbackQuery = None,
    run_id: RunIdQuery = LIVE_RUN,
) -> list[StrategyPerformance]:
    """Win rate, returns and Sharpe per strategy, side by side (never pooled)."""
    where = _filter(run_id, symbol, timeframe, direction, lookback_days)
    return await strategy_performance(conn=conn, cache=cache, where=where)


@router.get("/equity")
async def equity(
    conn: ConnDep,
    cache: CacheDep,
    symbol: SymbolQuery,
    timeframe: TimeframeQuery,
    direction: Direction | None = None,
    lookback_days: LookbackQuery = None,
    run_id: RunIdQuery = LIVE_RUN,
    points: Annotated[int, Query(ge=2, le=5000, description="Thin the curve to ~N points.")] = 500,
    strategy: StrategyQuery = None,
) -> EquityCurve:
    """Compounded equity after each settled signal, in exit_time order."""
    where = _filter(run_id, symbol, timeframe, direction, lookback_days, strategy)

    async def compute() -> EquityCurve:
        rows = await equity_curve(conn=conn, where=where, points=points)
        return EquityCurve(
            run_id=run_id,
            count=int(rows[0]["total"]) if rows else 0,
            points=[EquityPoint.model_validate(row) for row in rows],
        )

    return await cache.get(("equity", where, points), compute, conn=conn)


@router.get("/feature-importance")
async def feature_importance(
    conn: ConnDep,
    cache: CacheDep,
    model_type: Annotated[
        str | None, Query(min_length=1, max_length=100, pattern=TEXT_PATTERN)
    ] = None,
) -> list[FeatureImportance]:
    """Importances of the newest model version (of each model type, or of `model_type`)."""

    async def compute() -> list[FeatureImportance]:
        rows = await latest_feature_importance(conn=conn, model_type=model_type)
        return [FeatureImportance.model_validate(row) for row in rows]

    return await cache.get(
        ("feature_importance", model_type), compute, conn=conn, tables=("feature_importance",)
    )


@router.get("/model", responses={404: {"description": "No model was trained yet."}})
async def model(
    conn: ConnDep,
    model_type: Annotated[
        str, Query(min_length=1, max_length=100, pattern=TEXT_PATTERN)
    ] = "lightgbm",
) -> ModelDecision:
    """The newest retrain's decision: promoted or, if not, why; and the champion version.

    `/performance/feature-importance` lists importances only of models that have any (a
    model without a split has none); this says which model is in use and why."""
    row = await latest_decision(conn=conn, model_type=model_type)
    if row is None:
        raise HTTPException(
            status_code=404, detail="no model trained yet: run `signalengine retrain`"
        )
    return ModelDecision.model_validate(row)
