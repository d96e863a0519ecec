-- Why: /health must show a stalled ingest, and only the stream knows the exchange's clock
-- (the simulator runs faster than real time). The stream writes how far its newest stored
-- bar lies behind that clock every few seconds, whether bars arrive or not.
CREATE TABLE IF NOT EXISTS stream_health (
    name          text PRIMARY KEY,   -- the stream shard (run:exchange:shard)
    exchange_time timestamptz NOT NULL,  -- the exchange's clock when measured
    newest_close  timestamptz,        -- close of the slowest symbol's newest stored 1m bar
    lag_seconds   double precision,   -- exchange_time - newest_close (negative: clock behind)
    updated_at    timestamptz NOT NULL DEFAULT now()
);
