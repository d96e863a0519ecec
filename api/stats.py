"""Performance statistics of settled signals, computed in SQL and cached per filter."""

from __future__ import annotations

from typing import Any

from signalengine.api.cache import VersionedCache
from signalengine.api.db import AsyncConn
from signalengine.api.db.performance import (
    PerformanceFilter,
    performance_aggregates,
    performance_by_strategy,
    performance_by_symbol,
)
from signalengine.api.schemas import PerformanceStats, StrategyPerformance, SymbolPerformance


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def stats_from_row(
    row: dict[str, Any], *, where: PerformanceFilter, lookback_days: float | None
) -> PerformanceStats:
    """The public statistics from one `performance_aggregates` row."""
    count = int(row["count"])
    return PerformanceStats(
        run_id=where.run_id,
        exchange=where.exchange,
        strategy=where.strategy,
        symbol=where.symbol,
        timeframe=where.timeframe,
        direction=where.direction,  # type: ignore[arg-type]  # validated by the route
        lookback_days=lookback_days,
        since=where.since,
        count=count,
        wins=int(row["wins"]),
        losses=int(row["losses"]),
        expired=int(row["expired"]),
        win_rate=_ratio(row["wins"], count),
        avg_return_pct=_float(row["avg_return_pct"]),
        median_return_pct=_float(row["median_return_pct"]),
        total_return_pct=_float(row["total_return_pct"]),
        compounded_return_pct=_float(row["compounded_return_pct"]),
        profit_factor=_ratio(row["gross_gain"], row["gross_loss"]) if count else None,
        sharpe=_ratio(row["avg_return_pct"], row["std_return_pct"]),
        max_drawdown_pct=_float(row["max_drawdown_pct"]),
        avg_duration_sec=_float(row["avg_duration_sec"]),
    )


async def performance_stats(
    *,
    conn: AsyncConn,
    cache: VersionedCache,
    where: PerformanceFilter,
    lookback_days: float | None = None,
) -> PerformanceStats:
    """Statistics of the settled signals matching `where` (cached until the table changes)."""

    async def compute() -> PerformanceStats:
        row = await performance_aggregates(conn=conn, where=where)
        return stats_from_row(row, where=where, lookback_days=lookback_days)

    return await cache.get(("stats", where, lookback_days), compute, conn=conn)


async def symbol_performance(
    *, conn: AsyncConn, cache: VersionedCache, where: PerformanceFilter
) -> list[SymbolPerformance]:
    """Win rate and returns per symbol (cached until the table changes)."""

    async def compute() -> list[SymbolPerformance]:
        rows = await performance_by_symbol(conn=conn, where=where)
        return [
            SymbolPerformance(
                symbol=row["symbol"],
                count=int(row["count"]),
                wins=int(row["wins"]),
                win_rate=int(row["wins"]) / int(row["count"]),
                avg_return_pct=float(row["avg_return_pct"]),
                total_return_pct=float(row["total_return_pct"]),
            )
            for row in rows
        ]

    return await cache.get(("by_symbol", where), compute, conn=conn)


async def strategy_performance(
    *, conn: AsyncConn, cache: VersionedCache, where: PerformanceFilter
) -> list[StrategyPerformance]:
    """Win rate, returns and Sharpe per strategy (cached until the table changes)."""

    async def compute() -> list[StrategyPerformance]:
        rows = await performance_by_strategy(conn=conn, where=where)
        return [
            StrategyPerformance(
                strategy=row["strategy"],
                count=int(row["count"]),
                wins=int(row["wins"]),
                win_rate=int(row["wins"]) / int(row["count"]),
                avg_return_pct=float(row["avg_return_pct"]),
                total_return_pct=float(row["total_return_pct"]),
                sharpe=_ratio(row["avg_return_pct"], row["std_return_pct"]),
            )
            for row in rows
        ]

    return await cache.get(("by_strategy", where), compute, conn=conn)
