"""GET /metrics (Prometheus text) and /metrics/legacy (the key figures as JSON)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from signalengine.api.db.performance import PerformanceFilter
from signalengine.api.db.signals import count_signals
from signalengine.api.deps import ConnDep, StateDep
from signalengine.api.metrics import OUTCOMES, system_figures
from signalengine.api.schemas import LegacyMetrics, SymbolFigures
from signalengine.api.stats import performance_stats
from signalengine.core.vocabulary import DEFAULT_STRATEGY

router = APIRouter(prefix="/metrics", tags=["metrics"])


@router.get(
    "",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(state: StateDep, conn: ConnDep) -> Response:
    """Prometheus exposition of the API's families."""
    await state.metrics.refresh(conn=conn)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _by_strategy(
    figures: dict[tuple[str, str], tuple[float, float, float | None]],
) -> dict[str, dict[str, SymbolFigures]]:
    """strategy -> symbol -> figures."""
    out: dict[str, dict[str, SymbolFigures]] = {}
    for (strategy, symbol), (rate, avg, sharpe) in figures.items():
        out.setdefault(strategy, {})[symbol] = SymbolFigures(
            win_rate=rate, avg_return_pct=avg, sharpe=sharpe
        )
    return out


@router.get("/legacy")
async def legacy(state: StateDep, conn: ConnDep) -> LegacyMetrics:
    """The key figures as JSON, for clients that do not speak Prometheus."""
    metrics = state.metrics
    await metrics.refresh(conn=conn)
    stats = await performance_stats(conn=conn, cache=state.cache, where=PerformanceFilter())
    system = system_figures(metrics.started_at)
    snapshot = metrics.snapshot
    return LegacyMetrics(
        version=state.version,
        uptime_seconds=system["uptime_seconds"],
        cpu_percent=system["cpu_percent"],
        memory_bytes=system["memory_bytes"],
        process_memory_bytes=system["process_memory_bytes"],
        http_requests_total=int(metrics.total("http_requests_total")),
        ws_connected_clients=int(metrics.total("ws_connected_clients")),
        ws_messages_sent_total=int(metrics.total("ws_messages_sent_total")),
        ws_clients_dropped_total=int(metrics.total("ws_clients_dropped_total")),
        signals_received_total=int(metrics.total("signals_generated_total")),
        total_signals=await count_signals(conn=conn),
        settled_signals=stats.count,
        outcomes={outcome: snapshot.outcomes.get(outcome, 0) for outcome in OUTCOMES},
        win_rate=stats.win_rate,
        avg_return_pct=stats.avg_return_pct,
        total_return_pct=stats.total_return_pct,
        profit_factor=stats.profit_factor,
        sharpe=stats.sharpe,
        max_drawdown_pct=stats.max_drawdown_pct,
        by_symbol={
            symbol: SymbolFigures(win_rate=rate, avg_return_pct=avg, sharpe=sharpe)
            for (strategy, symbol), (rate, avg, sharpe) in snapshot.by_symbol.items()
            if strategy == DEFAULT_STRATEGY
        },
        by_strategy=_by_strategy(snapshot.by_symbol),
    )
