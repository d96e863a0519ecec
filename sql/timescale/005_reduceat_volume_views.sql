-- Why: the engine buckets 1m bars in numpy, adding a bucket's volume in np.add.reduceat's
-- order, and SQL's sum() adds in scan order: the last bit differs in about every other
-- bucket. The exact views' arm that computes pending buckets from klines now adds in
-- numpy's order (core.bucket_sql). The views are dropped here and recreated by
-- core.timescale_objects in this same transaction, with that definition.
DO $drop$
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind = 'v'
          AND c.relname ~ '^klines_[0-9]+[mhdw]$' AND c.relname <> 'klines_1m'
    LOOP
        EXECUTE format('DROP VIEW %I', v.relname);
    END LOOP;
END
$drop$;
