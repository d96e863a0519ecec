-- Why: performance figures per symbol/timeframe/direction and window are read far more
-- often than they change; the rollups flow recomputes them every few minutes so the API,
-- Prometheus gauges and the adaptive controls read one small table. '*' means "all".
CREATE TABLE IF NOT EXISTS performance_rollups (
    run_id            text NOT NULL,
    symbol            text NOT NULL,
    timeframe         text NOT NULL,
    direction         text NOT NULL,
    window_days       integer NOT NULL,            -- 1, 7, 30, or 0 for all time
    count             integer NOT NULL,
    wins              integer NOT NULL,
    losses            integer NOT NULL,
    expired           integer NOT NULL,
    win_rate          double precision NOT NULL,
    avg_return_pct    double precision NOT NULL,
    median_return_pct double precision NOT NULL,
    total_return_pct  double precision NOT NULL,
    profit_factor     double precision,            -- null when there is no losing trade
    sharpe            double precision,            -- mean/std of per-trade returns; null under 2 trades
    max_drawdown_pct  double precision NOT NULL,
    avg_duration_sec  double precision NOT NULL,
    computed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, symbol, timeframe, direction, window_days)
);

-- Adaptive control: symbols switched off for poor results keep emitting shadow signals.
CREATE TABLE IF NOT EXISTS symbol_controls (
    exchange        text NOT NULL,
    symbol          text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    reason          text,
    score_threshold double precision,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, symbol)
);
