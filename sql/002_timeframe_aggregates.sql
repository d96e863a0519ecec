-- Why: every higher timeframe must be readable as a plain relation with the same
-- columns. On plain PostgreSQL these are tables kept current by the writer inside the
-- same transaction as the 1m insert (core.timeframes), so a closed bucket is never
-- stale and a read is an index range scan instead of an aggregation over 1m bars.
-- `bars` counts the 1m bars inside the bucket, so an incomplete bucket is visible.
CREATE TABLE IF NOT EXISTS klines_5m (
    exchange text NOT NULL, symbol text NOT NULL, ts timestamptz NOT NULL,
    open double precision NOT NULL, high double precision NOT NULL,
    low double precision NOT NULL, close double precision NOT NULL,
    volume double precision NOT NULL, bars integer NOT NULL,
    PRIMARY KEY (exchange, symbol, ts)
);
CREATE TABLE IF NOT EXISTS klines_15m (LIKE klines_5m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS klines_1h (LIKE klines_5m INCLUDING ALL);
