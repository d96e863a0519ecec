-- Why: the retrain decides in one process and the live filter runs in another, while
-- /health, /performance and /metrics answer from the API: they meet here. A model that
-- was not promoted says why; a stream whose filter rejects every candidate says so.
CREATE TABLE IF NOT EXISTS model_decisions (
    model_type     text NOT NULL,
    model_version  text NOT NULL,
    run_id         text NOT NULL,
    promoted       boolean NOT NULL,
    reason         text,
    has_importance boolean NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_type, model_version)
);

CREATE TABLE IF NOT EXISTS ai_filter_health (
    name          text PRIMARY KEY,  -- the stream shard (its watermark name)
    model_version text,              -- null: no champion, the engine runs unfiltered
    scored        integer NOT NULL,  -- candidates in the window (the last N scored)
    passed        integer NOT NULL,
    rejecting_all boolean NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
