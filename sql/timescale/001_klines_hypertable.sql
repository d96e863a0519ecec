-- Why: on TimescaleDB the 1m bars live in a hypertable, one chunk per day, so recent
-- days stay in memory, old days compress per (exchange, symbol) into a few pages each
-- (a symbol's history is read together, newest first) and retention drops whole chunks
-- instead of deleting rows. Existing rows move into chunks (migrate_data). Compression
-- and retention *policies* depend on settings and are (re)set by core.timescale.
SELECT create_hypertable('klines', by_range('ts', INTERVAL '1 day'),
                         if_not_exists => true, migrate_data => true);

ALTER TABLE klines SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'ts DESC'
);
