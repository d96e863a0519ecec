-- Why: signals and their outcomes are the product. Every emitted signal is announced
-- on the `signals` channel so each API replica can push it to its WebSocket clients;
-- the payload carries only the id and routing keys because NOTIFY payloads are small.
CREATE TABLE IF NOT EXISTS signals (
    id             uuid PRIMARY KEY,
    run_id         text NOT NULL DEFAULT 'live',
    exchange       text NOT NULL,
    symbol         text NOT NULL,
    timeframe      text NOT NULL,
    direction      text NOT NULL CHECK (direction IN ('long', 'short')),
    ts             timestamptz NOT NULL,
    emitted_at     timestamptz NOT NULL,
    entry_price    double precision NOT NULL,
    take_profit    double precision NOT NULL,
    stop_loss      double precision NOT NULL,
    expires_at     timestamptz NOT NULL,
    score          double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    events         jsonb NOT NULL DEFAULT '[]',
    mtf_aligned    boolean NOT NULL DEFAULT false,
    mtf_score      double precision NOT NULL DEFAULT 0,
    mtf_details    jsonb NOT NULL DEFAULT '{}',
    ai_probability double precision,
    model_version  text,
    features       jsonb NOT NULL DEFAULT '{}',
    status         text NOT NULL DEFAULT 'open'
                   CHECK (status IN ('open', 'tp_hit', 'sl_hit', 'expired')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- one signal per trigger bar and direction within a run: replays and restarts are idempotent
    UNIQUE (run_id, exchange, symbol, timeframe, direction, ts)
);
CREATE INDEX IF NOT EXISTS signals_emitted ON signals (run_id, emitted_at DESC);
CREATE INDEX IF NOT EXISTS signals_symbol_emitted ON signals (symbol, emitted_at DESC);
CREATE INDEX IF NOT EXISTS signals_open ON signals (status) WHERE status = 'open';

CREATE TABLE IF NOT EXISTS signal_performance (
    signal_id    uuid PRIMARY KEY REFERENCES signals (id) ON DELETE CASCADE,
    run_id       text NOT NULL,
    exchange     text NOT NULL,
    symbol       text NOT NULL,
    direction    text NOT NULL,
    timeframe    text NOT NULL,
    entry_price  double precision NOT NULL,
    exit_price   double precision NOT NULL,
    entry_time   timestamptz NOT NULL,
    exit_time    timestamptz NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('tp_hit', 'sl_hit', 'expired')),
    return_pct   double precision NOT NULL,
    duration_sec double precision NOT NULL,
    score        double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS signal_performance_lookup
    ON signal_performance (run_id, symbol, timeframe, direction, exit_time);

CREATE TABLE IF NOT EXISTS feature_importance (
    model_type    text NOT NULL,
    model_version text NOT NULL,
    feature_name  text NOT NULL,
    importance    double precision NOT NULL,
    timestamp     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_type, model_version, feature_name)
);

CREATE OR REPLACE FUNCTION notify_signal() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('signals', json_build_object(
        'id', NEW.id, 'run_id', NEW.run_id, 'symbol', NEW.symbol,
        'direction', NEW.direction, 'timeframe', NEW.timeframe)::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS signals_notify ON signals;
CREATE TRIGGER signals_notify AFTER INSERT ON signals
    FOR EACH ROW EXECUTE FUNCTION notify_signal();

