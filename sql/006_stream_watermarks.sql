-- Why: Where each streaming shard got to: the newest primary close it has turned into signals.
-- A restarted stream resumes from here, so no primary bar is skipped or evaluated twice.
CREATE TABLE IF NOT EXISTS stream_watermarks (
    name       text PRIMARY KEY,
    ts         timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
