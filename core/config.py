"""Settings: one pydantic-settings class read from `SIGNALENGINE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from signalengine.core.symbols import normalize_symbol
from signalengine.core.vocabulary import TIMEFRAME_MINUTES

# Venues with a closed-bar client (tasks.marketdata.exchange) and a simulator dialect.
EXCHANGE_IDS: tuple[str, ...] = ("binance", "bybit")


class ExchangeVenue(BaseModel):
    """One exchange of a deployment: its ccxt id, optional simulator URL, its symbols."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="ccxt exchange id: binance or bybit.")
    url: str | None = Field(
        default=None,
        description="Base URL of a simulator speaking this venue's dialect; unset: the venue.",
    )
    symbols: list[str] = Field(min_length=1, description="ccxt unified symbols to stream.")

    @field_validator("id")
    @classmethod
    def _known_id(cls, value: str) -> str:
        if value not in EXCHANGE_IDS:
            raise ValueError(f"unknown exchange id {value!r}; supported: {', '.join(EXCHANGE_IDS)}")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        try:
            parts.port  # noqa: B018  # raises on a port that is not a number in range
        except ValueError as exc:
            raise ValueError(f"bad port in URL {value!r}") from exc
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError(f"the URL is a base URL, without path or query: {value!r}")
        return value.rstrip("/")

    @field_validator("symbols")
    @classmethod
    def _unified(cls, value: list[str]) -> list[str]:
        symbols = [normalize_symbol(s) for s in value]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols listed twice: {symbols}")
        return symbols


class Settings(BaseSettings):
    """Everything the pipeline can be tuned with; each field documents itself."""

    model_config = SettingsConfigDict(env_prefix="SIGNALENGINE_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; unset means an embedded PostgreSQL under state_dir.",
    )
    state_dir: Path = Field(
        default=Path(".state"), description="Where the embedded database, logs and MLflow live."
    )
    embedded_pg_port: int = Field(
        default=54329, description="Port of the embedded PostgreSQL on 127.0.0.1."
    )
    timescale_compress_after_days: int | None = Field(
        default=7,
        ge=1,
        description="With TimescaleDB: compress klines chunks older than this many days"
        " (segmented by exchange, symbol); unset means never compress.",
    )
    timescale_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="With TimescaleDB: drop klines chunks older than this many days (the"
        " timeframe aggregates keep their bars); unset means keep everything.",
    )
    exchange: str = Field(default="binance", description="ccxt exchange id to ingest from.")
    exchange_url: str | None = Field(
        default=None,
        description="Base URL of a Binance-protocol server (the simulator), e.g. http://127.0.0.1:8900.",
    )
    symbols: list[str] = Field(
        default=["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"],
        description="ccxt unified symbols to stream.",
    )
    exchanges: list[ExchangeVenue] | None = Field(
        default=None,
        description='Several exchanges at once, as JSON: \'[{"id": "binance", "url":'
        ' "http://127.0.0.1:8900", "symbols": ["BTC/USDT"]}, {"id": "bybit", ...}]\';'
        " unset means the single exchange, exchange_url and symbols.",
    )
    timeframes: list[str] = Field(
        default=["1m", "5m", "15m", "1h"], description="Timeframes with features and MTF votes."
    )
    primary_timeframe: str = Field(
        default="5m", description="Timeframe whose bars trigger signals."
    )
    mtf_alignment_required: bool = Field(
        default=True, description="Drop candidates that fewer than mtf_min_aligned timeframes back."
    )
    mtf_min_aligned: int = Field(default=2, ge=1, description="Timeframes that must agree.")
    signal_score_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Minimum score of an emitted signal."
    )
    cooldown_bars: int = Field(
        default=3, ge=0, description="Primary bars before the same symbol/direction may fire again."
    )
    tp_atr_multiple: float = Field(default=2.0, gt=0, description="Take profit = entry ± k·ATR.")
    sl_atr_multiple: float = Field(default=1.0, gt=0, description="Stop loss = entry ∓ k·ATR.")
    expiry_bars: int = Field(default=12, ge=1, description="Signal lifetime in primary bars.")
    strategies: str | None = Field(
        default=None,
        description="Strategies to run at once: a JSON list of {name, use, params} (use: a"
        " built-in name, package.module:Class or a signalengine.strategies entry point) or"
        ' the path of a .json/.toml file holding it; unset: [{"name": "default"}]'
        " (tasks/engine/loader.py).",
    )
    allow_unchecked_strategies: bool = Field(
        default=False,
        description="Let the live stream run strategies without a passing `signalengine"
        " strategy check` verdict of their version (logged, recorded, shown on"
        " /controls/strategies); built-in strategies never need one.",
    )
    fee_bps: float = Field(default=10.0, ge=0, description="Round-trip fee in basis points.")
    slippage_bps: float = Field(default=0.0, ge=0, description="Round-trip slippage in bps.")
    backfill_days: float = Field(
        default=2.0, gt=0, description="History fetched on a cold start of the stream."
    )
    live_window_bars: int = Field(
        default=1000,
        ge=100,
        description=(
            "Closed bars per timeframe the live engine evaluates each primary close; >= 1000 "
            "lets EMA/Wilder seeds decay below float precision so live == backtest signals."
        ),
    )
    ai_min_probability: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="With an AI filter loaded, candidates it scores below this are dropped.",
    )
    backfill_requests_per_second: float = Field(
        default=10.0,
        gt=0,
        description="REST requests per second shared by all backfill tasks (Prefect rate limit).",
    )
    adaptive_window_days: int = Field(
        default=30, description="Rollup window (1, 7 or 30 days) the adaptive control reads."
    )
    adaptive_min_signals: int = Field(
        default=30, ge=1, description="Settled signals needed before control acts on a symbol."
    )
    adaptive_disable_win_rate: float = Field(
        default=0.30, ge=0, le=1, description="Live win rate under which a symbol is disabled."
    )
    adaptive_enable_win_rate: float = Field(
        default=0.30, ge=0, le=1, description="Shadow win rate at which it is re-enabled."
    )
    adaptive_target_win_rate: float = Field(
        default=0.45, ge=0, le=1, description="Win rate per-symbol thresholds steer toward."
    )
    adaptive_threshold_step: float = Field(
        default=0.02, gt=0, description="How far a symbol's score threshold moves per rollup."
    )
    adaptive_threshold_min: float = Field(default=0.3, ge=0, le=1, description="Lower bound.")
    adaptive_threshold_max: float = Field(default=0.9, ge=0, le=1, description="Upper bound.")
    retrain_trigger_window_days: int = Field(
        default=7, description="Rollup window watched for a decaying live win rate."
    )
    retrain_trigger_win_rate: float = Field(
        default=0.30, ge=0, le=1, description="Live win rate that triggers a retrain run."
    )
    api_host: str = Field(default="127.0.0.1", description="API bind address.")
    api_port: int = Field(default=8000, description="API port.")
    api_token: str | None = Field(default=None, description="Bearer token; unset means open.")
    ws_keepalive_seconds: float = Field(default=15.0, gt=0, description="WebSocket keepalive.")
    ws_status_seconds: float = Field(default=5.0, gt=0, description="WebSocket status period.")
    ws_queue_size: int = Field(
        default=1000,
        ge=1,
        description="Messages buffered per WebSocket client; a client whose queue overflows is"
        " closed with code 1013.",
    )
    api_db_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Seconds an API request waits for a database connection before a 503.",
    )
    cors_origins: list[str] = Field(
        default=[],
        description='Origins allowed to call the API from a browser (CORS); ["*"] allows any.',
    )
    prefect_port: int = Field(default=4200, description="Port of the local Prefect server (up).")
    mlflow_port: int = Field(default=5000, description="Port of the MLflow server (up).")
    stream_metrics_port: int = Field(
        default=9108, description="Port where the streaming flow serves its Prometheus metrics."
    )
    stream_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the stream's metrics server binds (0.0.0.0 inside containers).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; unset means a file store under state_dir."
    )
    ai_reload_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the live AI filter checks whether the champion alias moved.",
    )
    ai_promotion_min_auc_gain: float = Field(
        default=0.0,
        ge=0.0,
        description="A retrained model becomes champion only if its holdout AUC beats the"
        " current champion's AUC on the same holdout by more than this.",
    )
    ai_promotion_min_holdout_rows: int = Field(
        default=30, ge=1, description="Holdout candidates a model needs before it may promote."
    )
    ai_promotion_min_holdout_positives: int = Field(
        default=10, ge=1, description="Take-profit labels the holdout needs before promotion."
    )
    ai_promotion_auc_confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1.0,
        description="Confidence of the one-sided DeLong bound that must put the holdout AUC"
        " above 0.5 for a model to promote.",
    )
    ai_promotion_min_pass_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Lowest holdout share of candidates a promoted filter may let through.",
    )
    ai_promotion_max_pass_rate: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="Highest holdout share of candidates a promoted filter may let through.",
    )
    ai_degraded_window_candidates: int = Field(
        default=20,
        ge=1,
        description="The live filter is degraded (/health, ai_filter_rejecting_all) when it"
        " rejected each of the last this many candidates it scored.",
    )
    ingest_lag_degraded_seconds: float = Field(
        default=180.0,
        gt=0,
        description="/health is degraded while the newest stored bar lies more than this"
        " (exchange-clock seconds) behind the exchange, or the exchange's clock lies this far"
        " behind the stored bars.",
    )
    ai_health_stale_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A stream's filter report older than this is ignored by /health.",
    )
    retrain_holdout_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Newest share of labelled candidates (by emission time) held out.",
    )
    retrain_embargo_minutes: float = Field(
        default=60.0,
        ge=0.0,
        description="Gap between the last training candidate and the holdout start, minutes.",
    )
    retrain_num_boost_round: int = Field(
        default=100, ge=1, description="LightGBM boosting rounds of the AI filter."
    )
    retrain_learning_rate: float = Field(
        default=0.05, gt=0.0, description="LightGBM learning rate of the AI filter."
    )
    retrain_num_leaves: int = Field(
        default=15, ge=2, description="LightGBM leaves per tree of the AI filter."
    )
    backtest_chunk_symbols: int = Field(
        default=4,
        ge=1,
        description="Symbols per backtest/retrain chunk (loaded, simulated, stored, released"
        " together): bounds peak memory whatever the universe size.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler (tcp://host:8786) for distributed backtests and retrain"
        " labelling; unset means a LocalCluster on this machine when Dask is asked for.",
    )
    dask_workers: int = Field(
        default=0,
        ge=0,
        description="Dask LocalCluster worker processes for backtest/retrain; 0 runs the"
        " chunks in this process (unless dask_address is set).",
    )
    sim_port: int = Field(default=8900, description="Port of the exchange simulator (up).")
    sim_speed: float = Field(
        default=60.0, gt=0, description="Simulated seconds per real second in the simulator."
    )
    sim_seed: int = Field(default=7, description="Seed of the synthetic market.")
    demo_seed_days: float = Field(
        default=7.0,
        gt=0,
        description="Days of simulator history `up` backfills beside the starting stream"
        " (what the first retrain learns from).",
    )
    webhook_urls: list[str] = Field(
        default=[],
        description="Alert webhook URLs (http/https) that receive strong live signals as JSON,"
        " e.g. '[\"https://hooks.example/se\"]'; empty means no webhooks.",
    )
    webhook_min_score: float = Field(
        default=0.8, ge=0.0, le=1.0, description="Only signals with score >= this are posted."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of the X-SignalEngine-Signature header; unset means"
        " unsigned webhooks.",
    )
    webhook_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Timeout of one webhook POST (connect and read), seconds."
    )
    webhook_retry_horizon_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="How long a webhook delivery is retried (from the signal's emission) before"
        " it is marked failed; the outbox keeps it across restarts meanwhile.",
    )
    webhook_backoff_seconds: float = Field(
        default=1.0, gt=0, description="First webhook retry delay; doubles per attempt."
    )
    webhook_max_backoff_seconds: float = Field(
        default=300.0, gt=0, description="Longest pause between two attempts of one delivery."
    )
    webhook_workers: int = Field(
        default=1,
        ge=0,
        description="Outbox delivery threads the stream runs (0: deliveries are left to"
        " `signalengine webhooks` workers).",
    )
    db_wait_cap_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Longest pause between two connection attempts while the stream waits"
        " (indefinitely) for a lost database.",
    )

    @field_validator("timeframes")
    @classmethod
    def _known_timeframes(cls, value: list[str]) -> list[str]:
        unknown = [tf for tf in value if tf not in TIMEFRAME_MINUTES]
        if unknown:
            raise ValueError(f"unknown timeframes {unknown}; known: {list(TIMEFRAME_MINUTES)}")
        if "1m" not in value:
            value = ["1m", *value]
        return sorted(set(value), key=TIMEFRAME_MINUTES.__getitem__)

    @model_validator(mode="after")
    def _distinct_exchanges(self) -> Settings:
        if self.exchanges is not None:
            ids = [venue.id for venue in self.exchanges]
            if not ids:
                raise ValueError("exchanges is empty; unset it for the single exchange")
            if len(set(ids)) != len(ids):
                raise ValueError(f"exchanges lists an exchange twice: {ids}")
        return self

    def venues(self) -> list[ExchangeVenue]:
        """The exchanges this deployment ingests from: `exchanges`, else the single one."""
        if self.exchanges is not None:
            return list(self.exchanges)
        return [
            ExchangeVenue.model_construct(
                id=self.exchange, url=self.exchange_url, symbols=list(self.symbols)
            )
        ]

    def for_exchange(self, exchange: str | None = None) -> Settings:
        """These settings seen by one exchange's jobs: its id, URL and symbols as the single
        `exchange`, `exchange_url`, `symbols` (None: the first venue). ValueError if unknown."""
        venues = self.venues()
        if exchange is None:
            venue = venues[0]
        else:
            found = [v for v in venues if v.id == exchange]
            if not found:
                known = ", ".join(v.id for v in venues)
                raise ValueError(f"exchange {exchange!r} is not configured; configured: {known}")
            venue = found[0]
        update = {"exchange": venue.id, "exchange_url": venue.url, "symbols": list(venue.symbols)}
        return self.model_copy(update=update)

    def for_job(self, exchange: str | None = None) -> Settings:
        """Settings for a one-off job (backfill) on `exchange`: a configured venue's own URL
        and symbols (`for_exchange`); any other id keeps `exchange_url` and `symbols`."""
        if exchange is None or any(v.id == exchange for v in self.venues()):
            return self.for_exchange(exchange)
        return self.model_copy(update={"exchange": exchange})


def get_settings() -> Settings:
    """Fresh settings from the environment (tests change the environment between calls)."""
    return Settings()
