-- Why: one NOTIFY per insert statement instead of one per row. A primary close at
-- 500 symbols stores hundreds of signals in one statement; the API replicas then wake
-- once, fetch the rows by id in one query and still send one message per signal.
-- The payload names the run and its new ids in insertion order, in chunks of at most
-- 150 ids (about 6 KB) because a NOTIFY payload must stay under 8000 bytes.
CREATE OR REPLACE FUNCTION notify_signals_batch() RETURNS trigger AS $$
DECLARE
    batch record;
BEGIN
    FOR batch IN
        SELECT run_id, array_agg(id ORDER BY n) AS ids
        FROM (SELECT id, run_id, row_number() OVER () AS n FROM new_signals) AS numbered
        GROUP BY run_id, (n - 1) / 150
        ORDER BY min(n)
    LOOP
        PERFORM pg_notify('signals', json_build_object(
            'run_id', batch.run_id, 'ids', batch.ids)::text);
    END LOOP;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS signals_notify ON signals;
CREATE TRIGGER signals_notify AFTER INSERT ON signals
    REFERENCING NEW TABLE AS new_signals
    FOR EACH STATEMENT EXECUTE FUNCTION notify_signals_batch();
DROP FUNCTION IF EXISTS notify_signal();
