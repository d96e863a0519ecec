"""Response models of the REST API (all times are UTC, returns are in percent)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["long", "short"]
SignalStatus = Literal["open", "tp_hit", "sl_hit", "expired"]


class ErrorDetail(BaseModel):
    """Body of every 4xx/5xx answer that is not a parameter validation error."""

    detail: str


class AiFilterHealth(BaseModel):
    """The live AI filter of the running stream shards (from `ai_filter_health`)."""

    status: Literal["ok", "unfiltered", "rejecting_all", "unknown"] = Field(
        description="rejecting_all: a champion rejected every recent candidate (no signals);"
        " unfiltered: no champion; unknown: no stream reported recently."
    )
    model_version: str | None = None
    scored: int = Field(default=0, description="Recent candidates scored (summed over shards).")
    passed: int = Field(default=0, description="Of those, how many the filter let through.")


class IngestHealth(BaseModel):
    """How far the stored bars lie behind the exchange's clock (from `stream_health`)."""

    status: Literal["ok", "lagging", "clock_behind", "unknown"] = Field(
        description="lagging: the newest stored bar is stale; clock_behind: the exchange's"
        " clock is behind the stored bars (nothing new is stored); unknown: no stream"
        " reported recently."
    )
    lag_seconds: float | None = Field(
        default=None, description="Exchange time minus the newest stored bar's close (worst)."
    )
    newest_close: datetime | None = None
    exchange_time: datetime | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool = Field(description="Whether a query against the database succeeded.")
    feed: bool = Field(description="Whether this replica is LISTENing for new signals.")
    ingest: IngestHealth = Field(
        default_factory=lambda: IngestHealth(status="unknown"),
        description="Staleness of the stored bars against the exchange's clock.",
    )
    ai_filter: AiFilterHealth = Field(
        default_factory=lambda: AiFilterHealth(status="unknown"),
        description="Whether the AI filter silences the engine (then status is degraded).",
    )
    version: str


class ModelDecision(BaseModel):
    """The newest retrain decision: promoted or not, and why."""

    model_type: str
    model_version: str
    run_id: str
    promoted: bool
    reason: str | None = Field(description="Why it was not promoted (null when promoted).")
    has_importance: bool = Field(description="False: the model made no split (no importance).")
    decided_at: datetime
    champion_version: str | None = Field(description="The newest promoted version, if any.")


class Signal(BaseModel):
    """One row of `signals` (DESIGN §3)."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    run_id: str
    exchange: str
    symbol: str
    timeframe: str
    direction: Direction
    ts: datetime = Field(description="Open time of the trigger bar (UTC).")
    emitted_at: datetime = Field(description="Close time of the trigger bar (UTC).")
    entry_price: float
    take_profit: float
    stop_loss: float
    expires_at: datetime
    score: float
    events: Any = Field(description="Events that triggered the signal (JSON).")
    mtf_aligned: bool
    mtf_score: float
    mtf_details: dict[str, Any] = Field(description='Vote per timeframe, e.g. {"15m": "long"}.')
    ai_probability: float | None
    model_version: str | None
    features: dict[str, Any]
    status: SignalStatus
    created_at: datetime = Field(description="When the row was stored (UTC).")
    strategy: str = Field(description="The strategy that emitted it (`default`: built-in).")
    strategy_version: str | None = Field(
        description="Hash of the strategy's code and parameters (null for rows stored before"
        " strategies were recorded)."
    )


class SignalPage(BaseModel):
    # `signals` (not `items`): DESIGN §5, users' scripts read `.signals[]`
    signals: list[Signal] = Field(description="Newest first (emitted_at, then id, descending).")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class Kline(BaseModel):
    ts: datetime = Field(description="Bar open time (UTC).")
    open: float
    high: float
    low: float
    close: float
    volume: float
    bars: int = Field(description="1m bars inside this bucket (fewer while it is forming).")


class KlineSeries(BaseModel):
    exchange: str
    symbol: str
    timeframe: str
    klines: list[Kline] = Field(description="Oldest first.")


class FeatureSnapshot(BaseModel):
    exchange: str
    symbol: str
    timeframe: str
    ts: datetime = Field(description="Open time of the last closed bar the features describe.")
    bars_used: int
    features: dict[str, float | None]


class PerformanceStats(BaseModel):
    """Statistics of settled signals; null where undefined (no trades, no losses, ...)."""

    run_id: str
    exchange: str | None = Field(default=None, description="The exchange filter; null: all.")
    strategy: str | None = Field(description="The strategy filtered on; null: all strategies.")
    symbol: str | None
    timeframe: str | None
    direction: Direction | None
    lookback_days: float | None
    since: datetime | None = Field(
        description="Lower bound of exit_time applied (now - lookback_days, to the minute)."
    )
    count: int
    wins: int = Field(description="Signals that hit their take profit.")
    losses: int = Field(description="Signals that hit their stop loss.")
    expired: int
    win_rate: float | None = Field(description="wins / count, in 0..1.")
    avg_return_pct: float | None
    median_return_pct: float | None
    total_return_pct: float | None = Field(description="Sum of per-trade returns (percent).")
    compounded_return_pct: float | None = Field(
        description="Return of reinvesting in every trade in exit_time order (percent)."
    )
    profit_factor: float | None = Field(description="Gross gain / gross loss; null without losses.")
    sharpe: float | None = Field(
        description="Mean / sample standard deviation of per-trade return_pct (not annualized)."
    )
    max_drawdown_pct: float | None = Field(
        description="Largest fall of compounded equity from its running peak (positive percent)."
    )
    avg_duration_sec: float | None


class EquityPoint(BaseModel):
    exit_time: datetime
    signal_id: UUID
    symbol: str
    return_pct: float
    equity: float = Field(description="Compounded equity, starting at 1.0.")
    drawdown_pct: float = Field(description="Fall from the running peak (positive percent).")


class EquityCurve(BaseModel):
    run_id: str
    count: int = Field(description="Trades in the curve before thinning to `points`.")
    points: list[EquityPoint]


class SymbolPerformance(BaseModel):
    symbol: str
    count: int
    wins: int
    win_rate: float
    avg_return_pct: float
    total_return_pct: float


class StrategyPerformance(BaseModel):
    """One strategy's settled signals: each strategy is its own system, never pooled."""

    strategy: str
    count: int
    wins: int
    win_rate: float
    avg_return_pct: float
    total_return_pct: float
    sharpe: float | None = Field(description="Mean / sample std of per-trade return_pct.")


class FeatureImportance(BaseModel):
    model_type: str
    model_version: str
    feature_name: str
    importance: float
    timestamp: datetime


class SymbolFigures(BaseModel):
    win_rate: float
    avg_return_pct: float
    sharpe: float | None


class LegacyMetrics(BaseModel):
    """The key figures of /metrics as one JSON object (live run; this replica's counters)."""

    version: str
    uptime_seconds: float
    cpu_percent: float = Field(description="Host CPU use since the previous reading (percent).")
    memory_bytes: float = Field(description="Host memory in use.")
    process_memory_bytes: float = Field(description="Resident memory of this API process.")
    http_requests_total: int
    ws_connected_clients: int
    ws_messages_sent_total: int
    ws_clients_dropped_total: int
    signals_received_total: int = Field(description="Live signals this replica got via LISTEN.")
    total_signals: int = Field(description="Live signals stored.")
    settled_signals: int
    outcomes: dict[str, int]
    win_rate: float | None
    avg_return_pct: float | None
    total_return_pct: float | None
    profit_factor: float | None
    sharpe: float | None
    max_drawdown_pct: float | None
    by_symbol: dict[str, SymbolFigures] = Field(description="The `default` strategy's figures.")
    by_strategy: dict[str, dict[str, SymbolFigures]] = Field(
        description="Every strategy's figures per symbol: strategy -> symbol -> figures."
    )
