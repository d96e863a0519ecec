-- Why: closed 1-minute bars are the single source of truth; every timeframe, feature,
-- signal and settlement is derived from them. Bad rows are kept, not dropped, so that a
-- user can see what the exchange sent and why it was refused.
CREATE TABLE IF NOT EXISTS klines (
    exchange text NOT NULL,
    symbol   text NOT NULL,
    ts       timestamptz NOT NULL,
    open     double precision NOT NULL,
    high     double precision NOT NULL,
    low      double precision NOT NULL,
    close    double precision NOT NULL,
    volume   double precision NOT NULL,
    PRIMARY KEY (exchange, symbol, ts)
);

CREATE TABLE IF NOT EXISTS klines_rejected (
    id          bigserial PRIMARY KEY,
    exchange    text,
    symbol      text,
    ts          timestamptz,
    raw         jsonb NOT NULL,
    reason      text NOT NULL,
    source      text NOT NULL DEFAULT 'unknown',
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS klines_rejected_symbol_ts ON klines_rejected (exchange, symbol, ts);

CREATE OR REPLACE VIEW klines_1m AS
    SELECT exchange, symbol, ts, open, high, low, close, volume, 1 AS bars FROM klines;
