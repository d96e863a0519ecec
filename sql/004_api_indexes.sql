-- Why: the API's hot reads must stay fast as tables grow.
--   * /signals pages newest first by (emitted_at, id) within a run, optionally per symbol,
--     and the WebSocket replays a run's signals by created_at: index those orders.
--   * /performance/stats aggregates signal_performance in exit_time order (compounded
--     equity, drawdown); a covering index gives that order without a sort or heap reads.
--   * Even so, a full pass over 100k settled signals costs tens of ms, so the API caches
--     each stats answer until the data changes. `api_data_versions` is that change marker:
--     a statement trigger bumps a table's version in the writer's own transaction, so a
--     reader never sees new rows under an old version (a sequence would not be
--     transactional). Writers of one table serialize on its version row; settlement
--     writes in batches, so this costs nothing noticeable.
-- Plain CREATE INDEX (not CONCURRENTLY): core.migrate runs each file in a transaction.
CREATE INDEX IF NOT EXISTS signals_run_emitted_id
    ON signals (run_id, emitted_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS signals_run_symbol_emitted_id
    ON signals (run_id, symbol, emitted_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS signals_run_created
    ON signals (run_id, created_at, id);
CREATE INDEX IF NOT EXISTS signal_performance_run_exit_covering
    ON signal_performance (run_id, exit_time, signal_id)
    INCLUDE (symbol, timeframe, direction, outcome, return_pct, duration_sec);
CREATE INDEX IF NOT EXISTS feature_importance_type_time
    ON feature_importance (model_type, timestamp DESC);

CREATE TABLE IF NOT EXISTS api_data_versions (
    name    text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO api_data_versions (name) VALUES ('signal_performance'), ('feature_importance')
    ON CONFLICT (name) DO NOTHING;

CREATE OR REPLACE FUNCTION bump_api_data_version() RETURNS trigger AS $$
BEGIN
    INSERT INTO api_data_versions AS v (name, version) VALUES (TG_TABLE_NAME, 1)
        ON CONFLICT (name) DO UPDATE SET version = v.version + 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS signal_performance_version ON signal_performance;
CREATE TRIGGER signal_performance_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON signal_performance
    FOR EACH STATEMENT EXECUTE FUNCTION bump_api_data_version();
DROP TRIGGER IF EXISTS feature_importance_version ON feature_importance;
CREATE TRIGGER feature_importance_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON feature_importance
    FOR EACH STATEMENT EXECUTE FUNCTION bump_api_data_version();
