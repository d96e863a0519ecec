"""Prometheus families of the streaming process (served on its own metrics port).

The API serves the HTTP, WebSocket, signal, outcome and performance families; the
stream serves what only it can see: the collector, features, events and AI inference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

COLLECTOR_MESSAGES = Counter(
    "collector_messages_total",
    "Closed klines received from the exchange.",
    ["exchange", "symbol"],
    registry=REGISTRY,
)
COLLECTOR_ERRORS = Counter(
    "collector_errors_total",
    "Errors while collecting klines, by kind.",
    ["exchange", "kind"],
    registry=REGISTRY,
)
COLLECTOR_RECONNECTS = Counter(
    "collector_reconnects_total",
    "Reconnections of the live kline stream.",
    ["exchange"],
    registry=REGISTRY,
)
KLINES_REJECTED = Counter(
    "klines_rejected_total",
    "Klines refused by validation or conflicting with stored bars.",
    ["exchange", "source"],
    registry=REGISTRY,
)
KLINES_STORED = Counter(
    "klines_stored_total",
    "New 1m klines written to the database.",
    ["exchange", "source"],
    registry=REGISTRY,
)
GAP_BACKFILLED = Counter(
    "collector_gap_bars_backfilled_total",
    "Missing minutes fetched over REST after a gap.",
    ["exchange"],
    registry=REGISTRY,
)
FEATURE_COMPUTATIONS = Counter(
    "feature_computations_total",
    "Feature frames computed, per timeframe.",
    ["timeframe"],
    registry=REGISTRY,
)
FEATURE_DURATION = Histogram(
    "feature_computation_duration_seconds",
    "Time to compute features for one batch.",
    ["timeframe"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EVENTS_DETECTED = Counter(
    "events_detected_total",
    "Events detected on the primary timeframe, by type.",
    ["type"],
    registry=REGISTRY,
)
EVENT_QUEUE_DEPTH = Gauge(
    "event_queue_depth",
    "Stored minutes waiting for evaluation (the stream's bounded ingest -> evaluation queue).",
    ["exchange"],
    registry=REGISTRY,
)
EVENT_PROCESSING = Histogram(
    "event_processing_duration_seconds",
    "Time from a closed batch to its signals.",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LIVE_STAGE_DURATION = Histogram(
    "stream_close_stage_duration_seconds",
    "Time of one primary close by stage: state_update (windows brought to the minute),"
    " compute (engine over the in-memory windows), store (signals, outbox, watermark"
    " committed; the signals NOTIFY fires at that commit).",
    ["stage"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INGEST_BACKPRESSURE = Counter(
    "stream_ingest_backpressure_seconds_total",
    "Seconds ingest waited because the evaluation queue was full (0 while evaluation keeps up).",
    ["exchange"],
    registry=REGISTRY,
)
SIGNALS_EMITTED = Counter(
    "stream_signals_emitted_total",
    "Signals written by this stream process.",
    ["symbol", "direction", "timeframe", "mtf_aligned", "strategy"],
    registry=REGISTRY,
)
AI_INFERENCE = Counter(
    "ai_inference_total",
    "Candidates scored by the AI filter, by decision.",
    ["decision"],
    registry=REGISTRY,
)
AI_INFERENCE_DURATION = Histogram(
    "ai_inference_duration_seconds",
    "Time to score one batch of candidates.",
    registry=REGISTRY,
)
AI_MODEL_RELOADS = Counter(
    "ai_model_reloads_total",
    "Times the champion model was (re)loaded.",
    registry=REGISTRY,
)
AI_FILTER_REJECTING_ALL = Gauge(
    "ai_filter_rejecting_all",
    "1 when the live AI filter rejected each of the last ai_degraded_window_candidates"
    " candidates it scored (the engine is silenced), else 0.",
    registry=REGISTRY,
)
AI_FILTER_WINDOW_PASS_RATIO = Gauge(
    "ai_filter_window_pass_ratio",
    "Share of the last ai_degraded_window_candidates scored candidates the filter passed.",
    registry=REGISTRY,
)
LAST_BAR_TS = Gauge(
    "stream_last_bar_timestamp_seconds",
    "Open time of the newest stored 1m bar of the slowest symbol (Unix s).",
    ["exchange"],
    registry=REGISTRY,
)
INGEST_LAG = Gauge(
    "stream_ingest_lag_seconds",
    "Exchange time minus the close time of the slowest symbol's newest stored bar.",
    ["exchange"],
    registry=REGISTRY,
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose the stream's registry over HTTP (a daemon thread)."""
    start_http_server(port, addr=host, registry=REGISTRY)


_served_ports: set[int] = set()


def start_metrics_server(port: int, host: str = "127.0.0.1") -> bool:
    """Serve the registry once per process; False when the port is taken (logged by caller)."""
    if port in _served_ports:
        return True
    try:
        serve_metrics(port, host)
    except OSError:
        return False
    _served_ports.add(port)
    return True


def observe_stream_health(marks: dict[str, int | None], *, exchange: str, now_ms: int) -> None:
    """Last stored bar time and lag behind the exchange clock, from the slowest symbol
    (labelled by exchange: one process may stream several)."""
    known = [v for v in marks.values() if v is not None]
    if not known:
        return
    oldest = min(known)
    LAST_BAR_TS.labels(exchange).set(oldest / 1000)
    INGEST_LAG.labels(exchange).set(max(0.0, (now_ms - (oldest + 60_000)) / 1000))


HEARTBEAT_TS = Gauge(
    "stream_heartbeat_timestamp_seconds",
    "Wall clock (Unix s) of the stream's event-loop heartbeat; stalls when the loop blocks.",
    registry=REGISTRY,
)
HEARTBEATS = Counter(
    "stream_heartbeats_total",
    "Heartbeats of the stream's event loop (one per HEARTBEAT_SECONDS while it runs).",
    registry=REGISTRY,
)
DATABASE_UP = Gauge(
    "stream_database_up",
    "1 while the stream has a working database connection, 0 while it waits for one.",
    registry=REGISTRY,
)
DATABASE_OUTAGE = Gauge(
    "stream_database_outage_seconds",
    "How long the stream has been waiting for the database (0 when connected).",
    registry=REGISTRY,
)
HEARTBEAT_SECONDS = 0.5


async def heartbeat(outage_seconds: Callable[[], float], connected: Callable[[], bool]) -> None:
    """Beat until cancelled: proves the event loop is free and publishes the database state."""
    while True:
        HEARTBEAT_TS.set(time.time())
        HEARTBEATS.inc()
        DATABASE_UP.set(1.0 if connected() else 0.0)
        DATABASE_OUTAGE.set(outage_seconds())
        await asyncio.sleep(HEARTBEAT_SECONDS)
