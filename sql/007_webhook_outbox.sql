-- Why: webhook deliveries must survive a crash of the stream and a receiver that is down
-- for hours. Each delivery (one signal to one URL) is written in the same transaction as
-- its signal, so a stored signal always has its deliveries and a lost transaction has
-- neither; delivery workers claim due rows with FOR UPDATE SKIP LOCKED, so any number of
-- them (threads, processes, replicas) never post one delivery at the same time. Counts by
-- status come from this table, so they survive restarts.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id              bigserial PRIMARY KEY,
    signal_id       uuid NOT NULL REFERENCES signals (id) ON DELETE CASCADE,
    url             text NOT NULL,
    body            text NOT NULL,  -- the exact JSON that is signed and posted
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed', 'rejected')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    last_status     integer,  -- HTTP status of the last attempt (null: no answer)
    last_error      text,
    UNIQUE (signal_id, url)
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due
    ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_outbox_recent ON webhook_outbox (created_at DESC);
