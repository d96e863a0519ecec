-- Why: several strategies run at once (issue 16), so every signal records which strategy
-- emitted it and a version of that strategy's code and parameters; everything downstream
-- (outcomes, rollups, adaptive controls, the API and the feed) is read per strategy.
-- Rows written before this migration came from the built-in engine: strategy 'default',
-- strategy_version NULL (their code/parameter hash was never recorded, so none is made up).
-- Idempotent: every step checks what is already there.
ALTER TABLE signals ADD COLUMN IF NOT EXISTS strategy text NOT NULL DEFAULT 'default';
ALTER TABLE signals ADD COLUMN IF NOT EXISTS strategy_version text;
ALTER TABLE signal_performance ADD COLUMN IF NOT EXISTS strategy text NOT NULL DEFAULT 'default';
ALTER TABLE performance_rollups ADD COLUMN IF NOT EXISTS strategy text NOT NULL DEFAULT 'default';
ALTER TABLE symbol_controls ADD COLUMN IF NOT EXISTS strategy text NOT NULL DEFAULT 'default';

-- Two strategies may both fire on one bar and direction: the idempotency key grows by the
-- strategy (ON CONFLICT DO NOTHING in tasks/outcomes/signals.py names no constraint).
ALTER TABLE signals DROP CONSTRAINT IF EXISTS signals_run_id_exchange_symbol_timeframe_direction_ts_key;
CREATE UNIQUE INDEX IF NOT EXISTS signals_run_strategy_series_ts
    ON signals (run_id, strategy, exchange, symbol, timeframe, direction, ts);

-- Rollups and controls are keyed per strategy too.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_attribute a
            ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = 'performance_rollups'::regclass AND i.indisprimary
          AND a.attname = 'strategy'
    ) THEN
        ALTER TABLE performance_rollups DROP CONSTRAINT IF EXISTS performance_rollups_pkey;
        ALTER TABLE performance_rollups ADD CONSTRAINT performance_rollups_pkey
            PRIMARY KEY (run_id, strategy, symbol, timeframe, direction, window_days);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_attribute a
            ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = 'symbol_controls'::regclass AND i.indisprimary
          AND a.attname = 'strategy'
    ) THEN
        ALTER TABLE symbol_controls DROP CONSTRAINT IF EXISTS symbol_controls_pkey;
        ALTER TABLE symbol_controls ADD CONSTRAINT symbol_controls_pkey
            PRIMARY KEY (exchange, strategy, symbol);
    END IF;
END;
$$;

-- The API's filtered reads: /signals?strategy= pages newest first within a run (optionally
-- per symbol), /performance/stats?strategy= reads one strategy's trades in exit order.
CREATE INDEX IF NOT EXISTS signals_run_strategy_emitted_id
    ON signals (run_id, strategy, emitted_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS signals_run_strategy_symbol_emitted_id
    ON signals (run_id, strategy, symbol, emitted_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS signal_performance_run_strategy_exit_covering
    ON signal_performance (run_id, strategy, exit_time, signal_id)
    INCLUDE (symbol, timeframe, direction, outcome, return_pct, duration_sec);

-- The feed filters by strategy without a read per signal: the NOTIFY payload carries it.
CREATE OR REPLACE FUNCTION notify_signal() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('signals', json_build_object(
        'id', NEW.id, 'run_id', NEW.run_id, 'symbol', NEW.symbol,
        'direction', NEW.direction, 'timeframe', NEW.timeframe,
        'strategy', NEW.strategy)::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
