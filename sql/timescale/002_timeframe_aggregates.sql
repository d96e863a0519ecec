-- Why: on TimescaleDB every higher timeframe is a continuous aggregate instead of a
-- table kept by the writer (sql/002 + tasks.timeframes on plain PostgreSQL). They are
-- hierarchical (5m from klines, 15m from 5m, 1h from 15m: each level reads a 3-5x
-- smaller relation) and real-time (materialized_only = false): buckets past the last
-- refresh, including the open one, are computed from the level below at query time, so
-- a reader never waits for a refresh. Bucket = [ts, ts + width), aligned to UTC (the
-- time_bucket origin 2000-01-03 is a whole number of days from the epoch, as date_bin's).
-- The plain tables of sql/002 hold nothing the aggregates cannot rebuild from klines,
-- and they are in the way of the names, so they go. Refresh policies are set by
-- core.timescale (their offsets follow the timeframe width).
DROP TABLE IF EXISTS klines_5m, klines_15m, klines_1h;

CREATE MATERIALIZED VIEW klines_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange, symbol, time_bucket(INTERVAL '5 minutes', ts) AS ts,
       first(open, ts) AS open, max(high) AS high, min(low) AS low,
       last(close, ts) AS close, sum(volume) AS volume, count(*)::integer AS bars
FROM klines
GROUP BY exchange, symbol, time_bucket(INTERVAL '5 minutes', ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW klines_15m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange, symbol, time_bucket(INTERVAL '15 minutes', ts) AS ts,
       first(open, ts) AS open, max(high) AS high, min(low) AS low,
       last(close, ts) AS close, sum(volume) AS volume, sum(bars)::integer AS bars
FROM klines_5m
GROUP BY exchange, symbol, time_bucket(INTERVAL '15 minutes', ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW klines_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange, symbol, time_bucket(INTERVAL '1 hour', ts) AS ts,
       first(open, ts) AS open, max(high) AS high, min(low) AS low,
       last(close, ts) AS close, sum(volume) AS volume, sum(bars)::integer AS bars
FROM klines_15m
GROUP BY exchange, symbol, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;
