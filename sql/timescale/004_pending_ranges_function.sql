-- Why: the exact views of 003 read the merged pending ranges through a subquery, which
-- the planner, going by the pending table's default size estimate, expected to yield
-- hundreds of ranges; the second arm then cost as much as scanning every chunk of klines
-- and crossed jit_above_cost, so every read JIT-compiled thousands of functions (37 s
-- for a year of 1h bars instead of 0.05 s). core.timescale_objects now reads them through
-- klines_pending_ranges() (declared ROWS 1). The views are dropped here and recreated by
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
