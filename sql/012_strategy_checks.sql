-- Why: `signalengine strategy check` proves a strategy free of lookahead, warm-up bias,
-- live/backtest drift and nondeterminism; the live stream refuses a strategy whose exact
-- code and parameters (strategy_version) have no passing verdict, so the verdict is kept
-- here, once per version, instead of being recomputed at every start. A stream that runs
-- an unchecked or failing strategy anyway (SIGNALENGINE_ALLOW_UNCHECKED_STRATEGIES) says so
-- in strategy_overrides, which /controls/strategies shows.
CREATE TABLE IF NOT EXISTS strategy_checks (
    strategy_version text PRIMARY KEY,
    strategy text NOT NULL,
    passed boolean NOT NULL,
    verdict jsonb NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS strategy_overrides (
    strategy text NOT NULL,
    strategy_version text NOT NULL,
    run_id text NOT NULL,
    reason text NOT NULL,
    allowed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (strategy, strategy_version, run_id)
);
