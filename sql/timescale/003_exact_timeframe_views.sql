-- Why: a continuous aggregate is wrong for a materialized bucket from the moment a late
-- 1m bar commits into it until a refresh processes that invalidation (and a refresh can
-- be busy, fail or never come). Readers must never see that. So the aggregates move to
-- `klines_<tf>_cagg` (renamed in place: data, watermarks and policies stay) and the
-- contract's names `klines_<tf>` become views (created by core.timescale_objects, one
-- per aggregate, width-dependent) that serve the buckets overlapping a range recorded in
-- `klines_pending` from `klines` itself. A writer records its range in the same
-- transaction as its bars and deletes it once it has refreshed that range through every
-- aggregate (core.timescale_refresh); rows of writers that died are swept by the next.
CREATE TABLE IF NOT EXISTS klines_pending (
    id bigserial PRIMARY KEY,
    exchange text NOT NULL,
    symbol text NOT NULL,
    lo timestamptz NOT NULL,              -- first 1m bar open time of the range
    hi timestamptz NOT NULL CHECK (hi > lo),  -- end of the range (exclusive)
    owner_pid integer NOT NULL DEFAULT pg_backend_pid(),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS klines_pending_symbol ON klines_pending (exchange, symbol);

DO $rename$
DECLARE
    agg record;
BEGIN
    FOR agg IN
        SELECT view_name FROM timescaledb_information.continuous_aggregates
        WHERE view_schema = current_schema() AND view_name ~ '^klines_[0-9]+[mhdw]$'
    LOOP
        EXECUTE format('ALTER MATERIALIZED VIEW %I RENAME TO %I',
                       agg.view_name, agg.view_name || '_cagg');
    END LOOP;
END
$rename$;
