"""Prometheus families of the API, in a registry of its own (one per app instance).

Process-local families (HTTP, WebSocket, signals seen on LISTEN) are counted as they
happen. Outcome and performance families describe the whole `signal_performance` table
of the live run and are read from the database at scrape time, re-queried only when the
table changed (see api.cache), so every replica reports the same figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signalengine.api.db import AsyncConn
from signalengine.api.db.performance import (
    PerformanceFilter,
    cumulative_counts,
    data_versions,
    latest_feature_importance,
    outcome_counts,
    performance_by_strategy,
)
from signalengine.api.schemas import Signal
from signalengine.core.vocabulary import LIVE_RUN

RETURN_PCT_BUCKETS: tuple[float, ...] = (-10, -5, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 10)
DURATION_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)
SCORE_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
OUTCOMES: tuple[str, ...] = ("tp_hit", "sl_hit", "expired")
_VERSIONED_TABLES = ["signal_performance", "feature_importance"]
_LIVE = PerformanceFilter(run_id=LIVE_RUN)


@dataclass
class DatabaseSnapshot:
    """Figures read from the database for one scrape (live run only)."""

    versions: tuple[int, ...] | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    returns: tuple[list[int], float, int] = ([], 0.0, 0)
    durations: tuple[list[int], float, int] = ([], 0.0, 0)
    # (strategy, symbol) -> (win rate, mean return, sharpe): each strategy is its own system
    by_symbol: dict[tuple[str, str], tuple[float, float, float | None]] = field(
        default_factory=dict
    )
    importance: list[tuple[str, str, float]] = field(default_factory=list)


def _histogram(
    name: str, doc: str, bounds: tuple[float, ...], counts: tuple[list[int], float, int]
) -> HistogramMetricFamily:
    cumulative, total, n = counts
    buckets = [(str(float(b)), float(c)) for b, c in zip(bounds, cumulative, strict=False)]
    buckets.append(("+Inf", float(n)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


class _DatabaseCollector(Collector):
    """Serves the last DatabaseSnapshot as Prometheus families."""

    def __init__(self) -> None:
        self.snapshot = DatabaseSnapshot()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        outcomes = CounterMetricFamily(
            "signal_outcomes", "Settled live signals by outcome.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            outcomes.add_metric([outcome], snap.outcomes.get(outcome, 0))
        yield outcomes
        if snap.returns[0]:
            yield _histogram(
                "signal_return_pct",
                "Return of settled live signals (percent).",
                RETURN_PCT_BUCKETS,
                snap.returns,
            )
        if snap.durations[0]:
            yield _histogram(
                "signal_duration_seconds",
                "Time from emission to exit of settled live signals.",
                DURATION_BUCKETS,
                snap.durations,
            )
        win_rate = GaugeMetricFamily(
            "signal_win_rate",
            "Share of settled live signals that hit take profit, per strategy and symbol.",
            labels=["strategy", "symbol"],
        )
        avg_return = GaugeMetricFamily(
            "signal_avg_return_pct",
            "Mean return of settled live signals (percent), per strategy and symbol.",
            labels=["strategy", "symbol"],
        )
        sharpe = GaugeMetricFamily(
            "signal_sharpe",
            "Mean / std of per-trade return_pct of settled live signals, per strategy and symbol.",
            labels=["strategy", "symbol"],
        )
        for key, (rate, avg, sharpe_value) in sorted(snap.by_symbol.items()):
            win_rate.add_metric(list(key), rate)
            avg_return.add_metric(list(key), avg)
            if sharpe_value is not None:
                sharpe.add_metric(list(key), sharpe_value)
        yield from (win_rate, avg_return, sharpe)
        importance = GaugeMetricFamily(
            "feature_importance",
            "Importance of each feature in the newest model version.",
            labels=["feature_name", "model_type"],
        )
        for feature_name, model_type, value in snap.importance:
            importance.add_metric([feature_name, model_type], value)
        yield importance


def system_figures(started_at: float) -> dict[str, float]:
    """CPU (percent since the previous call), memory (bytes) and uptime (s) of this host/process."""
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_bytes": float(psutil.virtual_memory().used),
        "memory_percent": psutil.virtual_memory().percent,
        "process_memory_bytes": float(psutil.Process().memory_info().rss),
        "uptime_seconds": time.monotonic() - started_at,
    }


class ApiMetrics:
    """Every Prometheus family the API serves, registered in `self.registry`."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            registry=reg,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.ws_connected = Gauge(
            "ws_connected_clients", "Open /ws/feed connections.", registry=reg
        )
        self.ws_messages_sent = Counter(
            "ws_messages_sent_total", "Messages sent to /ws/feed clients.", registry=reg
        )
        self.ws_dropped = Counter(
            "ws_clients_dropped_total",
            "Slow /ws/feed clients closed because their queue filled.",
            registry=reg,
        )
        self.ws_messages_dropped = Counter(
            "ws_messages_dropped_total",
            "Messages slow /ws/feed clients lost (their queue at the 1013 close, and after).",
            registry=reg,
        )
        self.signals_generated = Counter(
            "signals_generated_total",
            "Live signals announced to this replica.",
            ["symbol", "direction", "timeframe", "mtf_aligned", "strategy"],
            registry=reg,
        )
        self.signal_score = Histogram(
            "signal_score",
            "Score of live signals announced to this replica.",
            registry=reg,
            buckets=SCORE_BUCKETS,
        )
        Gauge("system_cpu_percent", "Host CPU use (percent).", registry=reg).set_function(
            lambda: psutil.cpu_percent(interval=None)
        )
        Gauge("system_memory_bytes", "Host memory in use (bytes).", registry=reg).set_function(
            lambda: float(psutil.virtual_memory().used)
        )
        Gauge(
            "process_uptime_seconds", "Seconds since the API started.", registry=reg
        ).set_function(lambda: time.monotonic() - self.started_at)
        self._database = _DatabaseCollector()
        reg.register(self._database)

    @property
    def snapshot(self) -> DatabaseSnapshot:
        return self._database.snapshot

    def observe_signal(self, signal: Signal) -> None:
        """Count a live signal this replica received."""
        self.signals_generated.labels(
            signal.symbol,
            signal.direction,
            signal.timeframe,
            str(signal.mtf_aligned).lower(),
            signal.strategy,
        ).inc()
        self.signal_score.observe(signal.score)

    async def refresh(self, *, conn: AsyncConn) -> None:
        """Re-read the database figures if their tables changed since the last refresh."""
        versions = await data_versions(conn=conn, names=_VERSIONED_TABLES)
        if versions is not None and versions == self._database.snapshot.versions:
            return
        rows = await performance_by_strategy(conn=conn, where=_LIVE, by_symbol=True)
        importance = await latest_feature_importance(conn=conn, model_type=None)
        self._database.snapshot = DatabaseSnapshot(
            versions=versions,
            outcomes=await outcome_counts(conn=conn),
            returns=await cumulative_counts(
                conn=conn, column="return_pct", bounds=RETURN_PCT_BUCKETS
            ),
            durations=await cumulative_counts(
                conn=conn, column="duration_sec", bounds=DURATION_BUCKETS
            ),
            by_symbol={
                (row["strategy"], row["symbol"]): (
                    int(row["wins"]) / int(row["count"]),
                    float(row["avg_return_pct"]),
                    float(row["avg_return_pct"]) / float(row["std_return_pct"])
                    if row["std_return_pct"]
                    else None,
                )
                for row in rows
            },
            importance=[
                (r["feature_name"], r["model_type"], float(r["importance"])) for r in importance
            ],
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        return generate_latest(self.registry)

    def total(self, name: str) -> float:
        """Sum of a family's samples called `name` over all label sets."""
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name
        )


class HttpMetricsMiddleware:
    """Counts and times HTTP requests by route template (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.http_requests.labels(method, template, str(status)).inc()
            self.metrics.http_duration.labels(method, template).observe(
                time.perf_counter() - started
            )
