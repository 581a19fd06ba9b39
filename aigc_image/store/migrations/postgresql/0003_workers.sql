-- Workers report here every few seconds: what they run on, which models they have loaded or
-- failed to load, which tasks they are running. /readyz and the operator page read it.
CREATE TABLE workers (
    worker_id  TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    device     TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    seen_at    DOUBLE PRECISION NOT NULL,
    state      TEXT NOT NULL,
    loaded     TEXT NOT NULL DEFAULT '[]',  -- JSON array of model labels
    failed     TEXT NOT NULL DEFAULT '{}',  -- JSON object: model label → why it could not load
    running    TEXT NOT NULL DEFAULT '[]'   -- JSON array of task ids
);
