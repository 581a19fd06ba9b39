-- Image tasks: one row per CreateAigcImageTask, from WAIT to DONE or FAIL.
CREATE TABLE tasks (
    task_id          TEXT PRIMARY KEY,
    secret_id        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('WAIT', 'RUN', 'DONE', 'FAIL')),
    spec             TEXT NOT NULL,            -- TaskSpec as JSON
    batch_key        TEXT NOT NULL,            -- tasks with equal keys may be batched
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_token      TEXT,
    lease_expires_at REAL,
    message          TEXT NOT NULL DEFAULT '',
    result_keys      TEXT NOT NULL DEFAULT '[]', -- JSON array of storage keys
    results_purged   INTEGER NOT NULL DEFAULT 0
);

-- The queue: oldest waiting task first; expired leases are found by the same index.
CREATE INDEX tasks_queue ON tasks (status, created_at);
-- The sweeper: finished tasks whose images are still stored.
CREATE INDEX tasks_finished ON tasks (results_purged, finished_at);
